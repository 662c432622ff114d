"""Bad input is refused before any trial starts and before anything is written under mlruns/:
exit 2, one readable message per problem naming the file and the key, no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lorasweep.search.cli import main

from .conftest import ROOT

ROWS = "".join(f'{{"question": "q{i}", "answer": "a{i % 2}"}}\n' for i in range(10))
DATA = "data: {path: rows.jsonl, prompt_template: 'Q: {question}', response_template: ' {answer}'}\n"

CASES = {
    "broken yaml": (
        "study: {name: x\nsearch_space: {}\n",
        [r"sweep.yaml:\d+: the file must be valid YAML, but got a syntax error, column \d+"],
    ),
    "unknown section": ("stdy: {name: x}\n", ["sweep.yaml:1: top-level section must be one of", "'study'?"]),
    "unknown parameter": (
        "search_space:\n  learning_rat: {type: float, low: 0.001, high: 0.01}\n",
        ["sweep.yaml:2: parameter names must be", "Did you mean 'learning_rate'"],
    ),
    "wrong type": ("train: {max_steps: ten}\n", ["sweep.yaml:1: parameter max_steps must be an integer"]),
    "low above high": (
        "search_space:\n  learning_rate: {type: float, low: 0.1, high: 0.01}\n",
        ["sweep.yaml:2: learning_rate.low must be <= high, but got low=0.1, high=0.01. Swap them."],
    ),
    "log from zero": (
        "search_space:\n  learning_rate: {type: float, low: 0, high: 0.01, log: true}\n",
        ["sweep.yaml:2: learning_rate.low must be > 0 on a log scale"],
    ),
    "empty choices": (
        "search_space:\n  lora_r: {type: choice, values: []}\n",
        ["sweep.yaml:2: lora_r.values must be a non-empty list"],
    ),
    "grid over a range": (
        "study: {sampler: grid}\nsearch_space:\n  learning_rate: {type: float, low: 0.001, high: 0.01}\n",
        ["a grid sampler needs a finite space, but got continuous ranges: learning_rate"],
    ),
    "unknown pruner": ("study: {pruner: medain}\n", ["sweep.yaml:1: the pruner must be one of", "'median'?"]),
    "unknown pruner option": (
        "study:\n  pruner: {type: median, n_startup_trial: 2}\n",
        ["sweep.yaml:2: the median pruner takes", "Did you mean 'n_startup_trials'?"],
    ),
    "impossible pruner option": (
        "study:\n  pruner: {type: percentile, percentile: 150}\n",
        ["sweep.yaml:2: the percentile pruner's options must be valid, but Optuna said"],
    ),
    "missing data file": (
        "data: {path: nowhere.jsonl, prompt_template: '{q}', response_template: '{a}'}\n",
        ["sweep.yaml:1: data.path must be an existing file", "nowhere.jsonl"],
    ),
    "template field the data lacks": (
        "data: {path: rows.jsonl, prompt_template: 'Q: {text}', response_template: ' {answer}'}\n",
        [
            (
                "data.prompt_template must use columns the data has, but got field {text}; "
                "the columns are question, answer"
            )
        ],
    ),
    "empty split": (
        DATA.replace("}\n", ", eval_split: 'train[:0]'}\n"),
        ["data.eval_split must select rows, but got eval_split='train[:0]', which selects none"],
    ),
    "empty data file": (
        DATA.replace("rows.jsonl", "empty.jsonl"),
        ["data.path must hold rows, but got an empty file", "empty.jsonl"],
    ),
    "malformed row": (
        DATA.replace("rows.jsonl", "broken.jsonl"),
        [
            "data.path must be a well-formed jsonl file, but reading",
            "line 11 is not a JSON object: Expecting",
        ],
    ),
    "response field the data lacks": (
        "data: {path: rows.jsonl, prompt_template: 'Q: {question}', response_template: ' {answr}'}\n",
        ["data.response_template must use columns the data has, but got field {answr}"],
    ),
    "a file of another kind as data": (
        "data: {path: /etc/passwd, prompt_template: '{q}', response_template: '{a}'}\n",
        ["sweep.yaml:1: data.path must be a .jsonl, .json, .csv or .parquet file", "'/etc/passwd'"],
    ),
    "a data URL this machine cannot reach": (
        "data: {path: 'http://127.0.0.1:9/rows.jsonl', prompt_template: '{q}', response_template: '{a}'}\n",
        ["data must load from path='http://127.0.0.1:9/rows.jsonl', but got", "that this machine can reach"],
    ),
    "a token in a data URL": (
        "data: {path: 'https://ghp_s3cret@example.com/rows.jsonl', prompt_template: '{q}', "
        "response_template: '{a}'}\n",
        [
            "sweep.yaml:1: data.path must not hold a password or token, but got https://***@example.com/rows.jsonl"
        ],
    ),
    "a database without its driver": (
        "study: {storage: 'mysql://lorasweep@127.0.0.1:9/optuna'}\n",
        ["the study storage's database driver must be installed", "No module named 'MySQLdb'"],
    ),
    "target modules the model lacks": (
        "model: {target_modules: [c_attn, c_proj]}\n",
        [
            "model.target_modules must name modules of the base model, but got target_modules=('c_attn', "
            "'c_proj'), which matches none of base='tiny''s. Its linear layers are down_proj, gate_proj"
        ],
    ),
    "another tool's sampler": (
        "study: {sampler: bayes}\n",
        ["sweep.yaml:1: the sampler must be one of", "What 'bayes' names elsewhere is 'tpe' here."],
    ),
    "another tool's pruner": (
        "study: {pruner: asha}\n",
        ["the pruner must be one of", "What 'asha' names elsewhere is 'successive_halving' here."],
    ),
    "another tool's distribution": (
        "search_space:\n  learning_rate: {type: loguniform, low: 1e-5, high: 1e-3}\n",
        ["sweep.yaml:2: learning_rate.type must be one of", "For loguniform write type: float, log: true."],
    ),
    "batch larger than the split": (
        DATA + "search_space:\n  batch_size: {type: choice, values: [4, 64]}\n",
        [
            (
                "sweep.yaml:3: the batch size must be at most the 8 rows of the train split, but got "
                "per_device_train_batch_size=64"
            )
        ],
    ),
    "a study with no metric": (
        "study: {metrics: []}\n",
        ["sweep.yaml:1: study.metrics must name at least one metric, but got metrics=[]."],
    ),
    "conditions in a cycle": (
        "search_space:\n  lora_dropout: {type: choice, values: [0.0, 0.1], when: {lora_r: 8}}\n"
        "  lora_r: {type: choice, values: [4, 8], when: {lora_dropout: 0.1}}\n",
        [
            "sweep.yaml:2: conditions must not form a cycle (a parent is sampled before what it enables), "
            "but got lora_dropout when lora_r, lora_r when lora_dropout. Drop one of these conditions."
        ],
    ),
    "a condition on itself": (
        "search_space:\n  lora_r: {type: choice, values: [4, 8], when: {r: 8}}\n",
        ["sweep.yaml:2: conditions must not form a cycle", "but got lora_r when lora_r."],
    ),
    "a condition's unknown parent": (
        "search_space:\n  use_dora: {type: choice, values: [true, false]}\n"
        "  lora_dropout: {type: float, low: 0, high: 0.2, when: {use_dor: false}}\n",
        [
            "sweep.yaml:3: a condition's parent must be a parameter of search_space, but got 'use_dor'. "
            "Did you mean 'use_dora'? Add use_dor to search_space, or drop it from lora_dropout.when."
        ],
    ),
    "a condition value the parent never takes": (
        "search_space:\n  lora_r: {type: int, low: 4, high: 16, step: 4}\n"
        "  lora_dropout: {type: float, low: 0, high: 0.2, when: {lora_r: [8, 32]}}\n",
        [
            "sweep.yaml:3: lora_dropout.when.lora_r must be values lora_r can take (one of 4, 8, 12, 16), "
            "but got lora_r=32."
        ],
    ),
    "a condition value of another type": (
        "search_space:\n  use_dora: {type: choice, values: [true, false]}\n"
        "  lora_dropout: {type: float, low: 0, high: 0.2, when: {use_dora: 0}}\n",
        ["sweep.yaml:3: lora_dropout.when.use_dora must be values use_dora can take (one of true, false)"],
    ),
    "a condition on a continuous range": (
        "search_space:\n  learning_rate: {type: float, low: 0.001, high: 0.01}\n"
        "  lora_dropout: {type: float, low: 0, high: 0.2, when: {learning_rate: 0.005}}\n",
        ["sweep.yaml:3: a condition's parent must take a finite set of values, but got learning_rate"],
    ),
    "a condition on a fixed value": (
        "train: {use_dora: false}\nsearch_space:\n"
        "  lora_dropout: {type: float, low: 0, high: 0.2, when: {use_dora: false}}\n",
        [
            "sweep.yaml:3: a condition's parent must be searched, but got use_dora fixed in train "
            "(use_dora=False)",
            "Move use_dora to search_space, or drop the condition",
        ],
    ),
    "a grid over conditions": (
        "study: {sampler: grid}\nsearch_space:\n  use_dora: {type: choice, values: [true, false]}\n"
        "  lora_dropout: {type: choice, values: [0.0, 0.1], when: {use_dora: false}}\n",
        [
            "sweep.yaml:1: the grid sampler must search a space without conditions",
            "but got when: on lora_dropout. Use random or tpe",
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_a_located_message_and_writes_nothing(case, in_tmp, write, capsys):
    import re

    text, expected = CASES[case]
    (in_tmp / "rows.jsonl").write_text(ROWS, encoding="utf-8")
    (in_tmp / "empty.jsonl").write_text("", encoding="utf-8")
    (in_tmp / "broken.jsonl").write_text(ROWS + '{"question": oops}\n', encoding="utf-8")
    path = write(text)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    for fragment in expected:
        assert re.search(fragment, err) if fragment.startswith("sweep.yaml:\\d") else fragment in err, err
    assert "Traceback" not in err and err.startswith("error: ") and "s3cret" not in err
    assert not (in_tmp / "mlruns").exists()


def test_files_that_are_not_utf8_name_the_line(in_tmp, capsys):
    (in_tmp / "sweep.yaml").write_bytes("study: {name: x}\n# caf\xe9\n".encode("latin-1"))
    assert main(["run", "sweep.yaml"]) == 2
    assert "sweep.yaml:2: the sweep file must be UTF-8, but got the byte 0xe9" in capsys.readouterr().err

    (in_tmp / "rows.jsonl").write_bytes(
        (ROWS + '{"question": "caf\xe9", "answer": "a1"}\n').encode("latin-1")
    )
    (in_tmp / "sweep.yaml").write_text(DATA, encoding="utf-8")
    assert main(["run", "sweep.yaml"]) == 2
    err = capsys.readouterr().err
    assert "data.path must be a UTF-8 file, but got the byte 0xe9 on line 11" in err and "rows.jsonl" in err
    assert not (in_tmp / "mlruns").exists()


def test_debug_shows_the_traceback(in_tmp, write):
    with pytest.raises(Exception, match=r"learning_rate\.low must be <= high"):
        main(["--debug", "run", str(write(CASES["low above high"][0]))])


@pytest.mark.parametrize("uri", ["http://user:hunter2@127.0.0.1:9", "https://hunter2@127.0.0.1:9/mlflow"])
def test_a_tracking_server_that_does_not_answer_is_named_at_once_without_its_secret(
    in_tmp, write, capsys, monkeypatch, uri
):
    from .stubs import Scripted, StubRunner

    monkeypatch.setattr("lorasweep.objectives.Recipe", lambda *a, **k: StubRunner(lambda r: Scripted()))
    path = write("study: {name: s}\n")
    assert main(["run", str(path), "--tracking-uri", uri]) == 2
    out, err = capsys.readouterr()
    assert "hunter2" not in out + err and "Traceback" not in err
    assert (
        "the MLflow tracking URI must name a server that answers, but got http" in err
        and "***@127.0.0.1:9" in err
    )
    assert not (in_tmp / "mlruns").exists()  # nothing written


def _model_with_its_own_code(folder: Path, marker: Path) -> Path:
    """The micro Llama of tests/fixtures, with an auto_map naming code that leaves `marker` when it runs."""
    base = folder / "custom"
    shutil.copytree(ROOT / "tests" / "fixtures" / "study_0_1" / "base", base)
    config = json.loads((base / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (base / "config.json").write_text(json.dumps(config))
    (base / "modeling_custom.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaForCausalLM\n\n\n"
        "class CustomForCausalLM(LlamaForCausalLM):\n    pass\n"
    )
    return base


SMALL_RUN = (
    "study: {{name: custom, n_trials: 1}}\n"
    "model: {{base: {base}, trust_remote_code: {trust}}}\n"
    'data: {{train_split: "train[:32]", eval_split: "train[1400:1408]", max_length: 32}}\n'
    "train: {{max_steps: 1, eval_steps: 1, logging_steps: 1, per_device_train_batch_size: 8}}\n"
    "eval: {{max_samples: 2, max_new_tokens: 2}}\n"
)


def test_a_model_that_runs_its_own_code_is_refused_in_one_line_unless_trusted(in_tmp, write, capsys):
    marker = in_tmp / "custom-code-ran"
    base = _model_with_its_own_code(in_tmp, marker)
    assert main(["run", str(write(SMALL_RUN.format(base=base, trust="false")))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.base must load without running code of its own, but got base=")
    assert "modeling_custom.py" in err
    assert len(err.strip().splitlines()) == 1 and not marker.exists() and not (in_tmp / "mlruns").exists()

    assert main(["run", str(write(SMALL_RUN.format(base=base, trust="true")))]) == 0
    out = capsys.readouterr().out
    assert f"note: model.base {base} runs its own code: modeling_custom.py (model.trust_remote_code)" in out
    assert marker.read_text() == "ran"


def test_the_valid_parameter_names_are_listed_once_however_many_are_wrong(in_tmp, write, capsys):
    path = write(
        "train: {max_step: 3, learnig_rate: 0.1}\nsearch_space:\n  lora_rr: {type: int, low: 1, high: 2}\n"
    )
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("parameter names must be") == 3 and err.count("Valid parameter names") == 1
    assert "Did you mean 'max_steps'" in err and err.rstrip().splitlines()[-1].startswith(
        "Valid parameter names"
    )


def test_a_csv_that_is_not_one_is_refused_without_quoting_it(in_tmp, write, capsys):
    """A symlink named .csv to a password file reads as a CSV of one column whose name is the file's
    first line: refused, and that line (a password hash) is never printed."""
    secret = "root:$6$s3cretsalt$hashhashhash:19000:0:99999:7:::"
    (in_tmp / "shadow").write_text(secret + "\ndaemon:*:19000:0:99999:7:::\n", encoding="utf-8")
    (in_tmp / "rows.csv").symlink_to(in_tmp / "shadow")
    path = write("data: {path: rows.csv, prompt_template: 'Q: {question}', response_template: ' {answer}'}\n")
    for command in ("validate", "run"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert err.strip() == (
            f"error: data.path must be a CSV file whose first line names its columns, but got "
            f"path='{in_tmp / 'rows.csv'}', whose first line holds 1 of 1 fields that are not column names "
            "(too long, or with characters such as ':' or '$'). Check that data.path names the data file, "
            "and that its first line is a header such as question,answer."
        ), err
        assert "s3cret" not in err and "hashhash" not in err and "daemon" not in err
    assert not (in_tmp / "mlruns").exists()

    (in_tmp / "good.csv").write_text("question,answer,Unnamed: 2\n" + "q,a,x\n" * 40, encoding="utf-8")
    good = write("data: {path: good.csv, prompt_template: 'Q: {question}', response_template: ' {answer}'}\n")
    assert main(["validate", str(good)]) == 0
