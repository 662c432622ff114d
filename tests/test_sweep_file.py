"""Sweep files: the Olive-material format, full files, and every error reported at once."""

import itertools
import re
from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from lorasweep.search import SweepError, load_sweep
from lorasweep.search.cli import main

ROOT = Path(__file__).resolve().parent.parent

OLIVE = """\
search_strategy:
  type: "random"        # random | tpe | grid | ... ; num_trials is the trial budget
  num_trials: 20
search_space:
  learning_rate: {type: "float", low: 1e-6, high: 1e-3, log: true}
  lora_r:        {type: "int", low: 8, high: 64}
  batch_size:    {type: "choice", values: [8, 16, 32]}
"""


def test_olive_material_format_runs_with_embedded_defaults(write):
    sweep = load_sweep(write(OLIVE, "olive.yaml"))
    assert sweep.study.sampler == "random" and sweep.study.n_trials == 20
    assert sweep.study.name == "olive" and sweep.study.metrics == ("eval_loss",)
    assert sweep.space.distributions == {
        "learning_rate": FloatDistribution(1e-6, 1e-3, log=True),  # 1e-6 read as a float
        "lora_r": IntDistribution(8, 64),
        "batch_size": CategoricalDistribution([8, 16, 32]),
    }
    assert sweep.model.base == "tiny" and sweep.data.path == "builtin:tone"
    resolved = sweep.space.resolve({"learning_rate": 1e-4, "lora_r": 16, "batch_size": 8}, sweep.fixed)
    assert resolved["r"] == 16 and resolved["per_device_train_batch_size"] == 8  # aliases
    assert resolved["learning_rate"] == 1e-4 and resolved["max_steps"] == sweep.fixed["max_steps"]


def test_full_file_with_tied_alpha_and_several_metrics(write, tmp_path):
    (tmp_path / "rows.csv").write_text("q,a\nhi,there\n", encoding="utf-8")
    sweep = load_sweep(
        write("""
study:
  name: full
  metrics: [f1, eval_loss]
  sampler: {type: nsgaii, seed: 7}
  n_trials: 5
model: {base: some/hub-model, target_modules: [q_proj, v_proj]}
data: {path: rows.csv, prompt_template: "{q}", response_template: " {a}", train_split: "train[:80%]"}
train: {max_steps: 3, lora_dropout: 0.1}
search_space:
  lora_r: {type: choice, values: [4, 8]}
  lora_alpha: {per_rank: {type: choice, values: [1, 2]}}
""")
    )
    assert sweep.study.directions == ("maximize", "minimize")  # each metric's natural direction
    assert sweep.study.sampler == "nsgaii" and sweep.study.seed == 7
    assert sweep.model.target_modules == ("q_proj", "v_proj")
    assert sweep.data.path == str(tmp_path / "rows.csv")  # relative to the sweep file
    assert sweep.data.label_column is None  # built-in defaults don't leak onto user data
    assert sweep.space.size() == 4
    params = sweep.space.resolve({"lora_r": 8, "lora_alpha_per_rank": 2}, sweep.fixed)
    assert params["lora_alpha"] == 16 and params["max_steps"] == 3 and params["lora_dropout"] == 0.1


def test_fixed_alpha_multiplier_follows_the_sampled_rank(write):
    sweep = load_sweep(write(OLIVE + "  lora_alpha: {per_rank: 2}\n"))
    assert sweep.space.resolve({"lora_r": 32}, sweep.fixed)["lora_alpha"] == 64


def test_grid_space_is_enumerated(write):
    sweep = load_sweep(
        write("""
study: {sampler: grid}
search_space:
  learning_rate: {type: float, low: 0.001, high: 0.003, step: 0.001}
  r: {type: int, low: 4, high: 8, step: 4}
""")
    )
    assert sweep.space.grid() == {"learning_rate": [0.001, 0.002, 0.003], "r": [4, 8]}
    assert sweep.space.size() == 6


def test_every_problem_is_reported_at_once_with_lines(write):
    path = write("""\
study:
  metric: f2
  sampler: grid
search_space:
  learning_rat: {type: float, low: 1e-3, high: 1e-2}
  lora_r: {type: int, low: 64, high: 8}
  lora_dropout: {type: float, low: 0, high: 0.1, log: true}
  batch_size: {type: choice, values: []}
  weight_decay: {type: float, low: 0.0, high: 0.1}
model:
  bse: x
""")
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    text = str(info.value)
    lines = text.splitlines()
    assert f"{path}:2: a study metric must be one of" in text and "'f2'" in text
    assert f"{path}:5: parameter names must be" in text and "Did you mean 'learning_rate'?" in text
    assert f"{path}:6: lora_r.low must be <= high, but got low=64, high=8" in text
    assert f"{path}:7: lora_dropout.low must be > 0 on a log scale" in text
    assert f"{path}:8: batch_size.values must be a non-empty list" in text
    assert f"{path}:11: a key of model must be one of" in text and "Did you mean 'base'?" in text
    assert "a grid sampler needs a finite space, but got continuous ranges: weight_decay" in text
    assert len(lines) == 8 and lines[-1].startswith("Valid parameter names, by where they go: aliases:")


def test_secrets_and_managed_fields_are_refused(write):
    with pytest.raises(SweepError, match=r"hub_token.*secret.*environment"):
        load_sweep(write("train:\n  hub_token: hf_abc\n"))


def test_broken_yaml_names_line_and_column(write):
    with pytest.raises(SweepError, match=r"sweep.yaml:4: .*valid YAML.*column 1.*flow sequence on line 3"):
        load_sweep(write("study:\n  name: x\n  bad: [1, 2\n"))


def test_cli_exits_2_without_traceback(write, capsys):
    path = write("search_space:\n  lora_rr: {type: int, low: 1, high: 2}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'lora_r'" in err and "Traceback" not in err


@pytest.mark.parametrize("path", sorted((ROOT / "spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_file_validates(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert "OK" in capsys.readouterr().out


def test_validate_shows_the_pruner(capsys):
    assert main(["validate", str(ROOT / "spaces" / "demo.yaml")]) == 0
    out = capsys.readouterr().out
    assert "pruner     successive_halving(min_resource=20, reduction_factor=4); retries 1" in out
    assert "sampler    tpe (seed 21, n_startup_trials=4), 8 trials" in out


def test_validate_shows_each_condition_and_the_sampler_it_implies(capsys):
    assert main(["validate", str(ROOT / "spaces" / "conditional.yaml")]) == 0
    out = capsys.readouterr().out
    assert "sampler    tpe (seed 0, multivariate=True, group=True, n_startup_trials=4), 10 trials" in out
    assert "  adam_beta2: float [0.9, 0.999]  when optim = adamw_torch\n" in out
    assert "  optim: one of adamw_torch, sgd\n" in out  # a parent: listed before what it enables


def test_shipped_sweep_files_start_with_their_schema_then_their_command():
    for path in (ROOT / "spaces").glob("*.yaml"):
        first, second = path.read_text(encoding="utf-8").splitlines()[:2]
        assert first == "# yaml-language-server: $schema=./sweep-file.schema.json", path
        assert second.startswith("# lorasweep run spaces/"), path


# Unknown keys on one line (flow mappings): reported in the order written, whatever the hash seed.
UNKNOWN_KEYS = """\
study:
  pruner: {type: median, zeta: 1, alpha: 2, mid: 3, beta: 4}
search_space:
  learning_rate: {type: float, low: 0.001, high: 0.01, zz: 1, aa: 2, mm: 3}
promote: {zulu: 1, alpha: 2, mike: 3}
"""


def test_problems_come_in_file_order_under_every_hash_seed(write):
    import os
    import subprocess
    import sys

    path = write(UNKNOWN_KEYS)
    script = f"from lorasweep.search.cli import main; raise SystemExit(main(['validate', {str(path)!r}]))"
    outputs = set()
    for seed in ("0", "1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "HF_HUB_OFFLINE": "1"}
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
        assert done.returncode == 2, done.stderr
        outputs.add(done.stderr)
    assert len(outputs) == 1, outputs
    err = outputs.pop()
    for words in (
        ("zeta=", "alpha=", "mid=", "beta="),
        ("'zz'", "'aa'", "'mm'"),
        ("'zulu'", "'alpha'", "'mike'"),
    ):
        at = [err.index(w) for w in words]
        assert at == sorted(at), err


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "promote: {max_logit_diff: .nan}\n",
            "promote.max_logit_diff must be a number > 0, but got max_logit_diff=nan",
        ),
        (
            "promote: {max_eval_loss_change: .inf}\n",
            "promote.max_eval_loss_change must be a relative change >= 0",
        ),
        ("search_space:\n  lora_alpha: {per_rank: .inf}\n", "lora_alpha.per_rank must be a positive number"),
        (
            "search_space:\n  learning_rate: {type: float, low: .nan, high: 1}\n",
            "learning_rate.low must be a finite number",
        ),
        ("search_space:\n  lora_alpha: {per_rank: true}\n", "lora_alpha.per_rank must be a positive number"),
    ],
)
def test_numbers_in_a_sweep_file_are_finite_numbers(write, text, expected):
    """A NaN tolerance fails every comparison (a gate no export passes); an infinite one, or an
    infinite alpha multiplier, is no limit. Both are refused where they are written, as is true."""
    with pytest.raises(SweepError, match=re.escape(expected)):
        load_sweep(write(text))


def test_pruners_take_their_optuna_options(write):
    import optuna

    from lorasweep.search.strategy import build_pruner

    sweep = load_sweep(
        write("study:\n  pruner: {type: patient, patience: 2, wrapped: {type: median, n_warmup_steps: 20}}\n")
    )
    assert sweep.study.pruner == {
        "type": "patient",
        "patience": 2,
        "wrapped": {"type": "median", "n_warmup_steps": 20},
    }
    pruner = build_pruner(sweep.study.pruner)
    assert isinstance(pruner, optuna.pruners.PatientPruner)
    assert isinstance(pruner._wrapped_pruner, optuna.pruners.MedianPruner)
    for name, cls in (("hyperband", "HyperbandPruner"), ("successive_halving", "SuccessiveHalvingPruner")):
        spec = load_sweep(write(f"study: {{pruner: {name}}}\n")).study.pruner
        assert type(build_pruner(spec)).__name__ == cls
    assert load_sweep(write("study: {pruner: none}\n")).study.pruner is None
    assert load_sweep(write("study: {}\n")).study.retries == 1


def test_early_stopping_is_a_train_knob_and_needs_evaluations(write):
    sweep = load_sweep(write("train: {early_stopping_patience: 3, early_stopping_threshold: 0.01}\n"))
    assert sweep.fixed["early_stopping_patience"] == 3
    with pytest.raises(SweepError, match="early stopping needs evaluations, but got eval_strategy='no'"):
        load_sweep(write("train: {early_stopping_patience: 3, eval_strategy: 'no'}\n"))
    with pytest.raises(SweepError, match="parameter early_stopping_patience must be an integer"):
        load_sweep(write("train: {early_stopping_patience: soon}\n"))
    with pytest.raises(SweepError, match=r"study\.retries must be an integer >= 0"):
        load_sweep(write("study: {retries: -1}\n"))


def _bomb(depth: int) -> str:
    """A "billion laughs": each anchor is a list of nine aliases of the one before."""
    names = [f"l{i}" for i in range(depth + 1)]
    lines = [f"{names[0]}: &{names[0]} [ha, ha, ha, ha, ha, ha, ha, ha, ha]"]
    lines += [f"{n}: &{n} [{', '.join(['*' + prev] * 9)}]" for prev, n in itertools.pairwise(names)]
    return "\n".join(lines) + f"\nsearch_space: {{lora_r: {{type: choice, values: *{names[-1]}}}}}\n"


def test_a_yaml_bomb_is_refused_before_it_expands(write):
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(SweepError, match="must expand to at most 100,000 values") as error:
        load_sweep(write(_bomb(6)))  # 9**7 = 4.8M values once expanded; 0.1 had 12 s and 1.1 GB here
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "sweep.yaml:1:" in str(error.value) and peak < 100 * 2**20
    with pytest.raises(SweepError, match="nest its values"):
        load_sweep(write("a: " + "[" * 5000 + "]" * 5000 + "\n"))


@pytest.mark.parametrize(
    "section, name, expected",
    [
        ("study", "..", "study.name must name a folder of its own, but got name='..', a path."),
        ("study", "x" * 300, "study.name must be at most 100 characters (bytes in UTF-8), as it names files"),
        ("tracking", "/tmp/x", "tracking.experiment must use only letters, digits, '.', '-' and '_'"),
        ("tracking", "../../../x", "tracking.experiment must use only letters, digits"),
        ("tracking", ".", "tracking.experiment must name a folder of its own, but got name='.'"),
    ],
)
def test_names_that_become_folders_are_refused_at_their_line(write, section, name, expected):
    """A study's and an experiment's names become folders (mlruns/artifacts/<experiment>,
    reports/<study>): a path, `..` or a name too long for a file name is refused at validate."""
    key = "name" if section == "study" else "experiment"
    path = write(f"train: {{max_steps: 2}}\n{section}:\n  {key}: '{name}'\n")
    with pytest.raises(SweepError) as error:
        load_sweep(path)
    assert str(error.value).startswith(f"{path}:3: ") and expected in str(error.value)


@pytest.mark.parametrize("experiment", ["team/demo", "/Users/x@y.org/exp"])
def test_a_server_names_its_experiments_as_it_likes(write, monkeypatch, experiment):
    """On a tracking server an experiment is no folder: a path-like name it takes is taken too."""
    server = write(f"tracking: {{uri: 'http://mlflow:5000', experiment: '{experiment}'}}\n")
    assert load_sweep(server).experiment == experiment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "databricks")
    assert load_sweep(write(f"tracking: {{experiment: '{experiment}'}}\n")).experiment == experiment


def test_a_run_checks_the_experiment_against_a_local_tracking_uri_flag(write, in_tmp, capsys):
    """The file names a server, the flag a local store: the experiment would become a folder."""
    path = write("study: {name: ok}\ntracking: {uri: 'http://mlflow:5000', experiment: 'team/demo'}\n")
    assert main(["run", str(path), "--tracking-uri", "sqlite:///mlruns/mlflow.db"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: tracking.experiment must use only letters, digits, '.', '-' and '_'"), err
    assert not (in_tmp / "mlruns" / "mlflow.db").exists()


def test_a_stored_sweep_is_read_whatever_its_names(in_tmp):
    """A study's stored sweep is read again to resume, promote or export it: names its version took
    (an experiment on a server, a longer study name) must not lock it out."""
    import optuna

    from lorasweep.search import record
    from lorasweep.search.sweepfile._sweep import stored_sweep

    study = optuna.create_study(study_name="s" * 120)
    study.set_user_attr(
        record.SWEEP, "study: {name: " + "s" * 120 + "}\ntracking: {experiment: 'team/demo'}\n"
    )
    sweep = stored_sweep(study)
    assert sweep.experiment == "team/demo" and sweep.study.name == "s" * 120


def test_study_flag_names_obey_the_same_rules(write, in_tmp, capsys):
    path = write("study: {name: ok}\n")
    for name, expected in (
        ("..", "a study name must name a folder of its own, but got name='..'"),
        ("y" * 300, "a study name must be at most 100 characters"),
    ):
        assert main(["run", str(path), "--study", name]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {expected}") and len(err.strip().splitlines()) == 1, err
    assert not (in_tmp / "mlruns").exists()


def test_a_sweep_file_that_is_a_folder_or_a_fifo_is_one_line(tmp_path, capsys):
    import os

    folder = tmp_path / "sweep.yaml"
    folder.mkdir()
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # nothing ever writes to it: a read would block forever
    for path, kind in ((folder, "a directory. Name the YAML file in it."), (fifo, "a FIFO.")):
        for command in ("validate", "run"):
            assert main([command, str(path)]) == 2
            err = capsys.readouterr().err
            assert err.strip() == f"error: {path}: sweep file must be a YAML file, but got path={path}, " + (
                kind if kind.startswith("a directory") else "a FIFO. Save the sweep as a file and name that."
            ), err


# A file 0.1 ran: its study section had a key 0.1 ignored, its gate tolerances were not finite.
RAN_BEFORE = """\
study: {name: old, n_trials: 2, seed: 3, timeout: .inf}
search_space:
  learning_rate: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
promote: {max_logit_diff: .nan, max_perplexity_change: {int4: .inf}}
"""


def test_a_sweep_stored_by_a_study_that_ran_still_loads(write):
    """New files are refused for what 0.1 let through; a study that ran with such a file stays
    resumable and promotable: those keys fall back to their defaults."""
    path = write(RAN_BEFORE, "old.yaml")
    with pytest.raises(SweepError) as refused:
        load_sweep(path)
    assert "'seed'" in str(refused.value) and "max_logit_diff" in str(refused.value)
    sweep = load_sweep(path, RAN_BEFORE, stored=True)
    assert sweep.study.name == "old" and sweep.study.n_trials == 2 and sweep.study.timeout is None
    assert sweep.promote.max_logit_diff == 1e-3 and sweep.promote.max_perplexity_change["int4"] == 0.15
    from lorasweep.search.sweepfile import promote_spec

    assert promote_spec(RAN_BEFORE).max_logit_diff == 1e-3


def test_one_wrong_value_is_reported_once(write):
    """A value that fails every branch of a union alike was listed once per branch."""
    path = write(
        "search_space:\n  lora_r: {type: choice, values: [[2, 4]]}\n  lora_alpha: {per_rank: true}\n",
        "nested.yaml",
    )
    with pytest.raises(SweepError) as refused:
        load_sweep(path)
    lines = [str(p) for p in refused.value.problems]
    assert len(lines) == len(set(lines)) and len(lines) == 2, lines


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("study: {timeout: 0}\n", "study.timeout must be a positive number of seconds, but got timeout=0."),
        ("data: {eval_fraction: 1.5}\n", "data.eval_fraction must be a number > 0 and < 1, but got"),
        ("study: {sampler: {type: tpe, seed: true}}\n", "study.sampler.seed must be an integer or null"),
    ],
)
def test_a_bound_says_both_ends_and_null_is_named_where_it_is_allowed(write, text, said):
    with pytest.raises(SweepError) as refused:
        load_sweep(write(text, "bounds.yaml"))
    assert said in str(refused.value)
