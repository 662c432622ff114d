"""Several trials handed over as one ONNX base with LoRA inputs and an .onnx_adapter per trial.

Trains two short trials of different ranks and target modules once per module (about 10 s), then
bundles them (about 45 s: Model Builder and Olive run for the base and for each adapter, and each
trial's merged export is made for comparison). What the gate says is checked against onnxruntime-genai
and peft directly, not taken from parity.json alone.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import onnx
import onnxruntime as ort
import onnxruntime_genai as og
import optuna
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from lorasweep.objectives.tiny import ensure_tiny_base
from lorasweep.search.cli import main
from lorasweep.search.errors import UserError
from lorasweep.search.handover._bundle import check_adapters
from lorasweep.search.selection import Criterion, top

SWEEP = """\
study: {name: bundled, metric: eval_loss, sampler: {type: grid, seed: 0}, n_trials: 4}
data: {train_split: "train[:400]", eval_split: "train[1400:1440]"}
train: {max_steps: 20, eval_steps: 10, logging_steps: 10, per_device_train_batch_size: 16,
  learning_rate: 0.01}
eval: {max_samples: 6, max_new_tokens: 8}
promote: {model_name: tones, precisions: [fp32]}
search_space:
  r: {type: choice, values: [4, 8]}
  target_modules: {type: choice, values: [attention, all-linear]}
"""

PROMPTS = ["Phrase: what a great seat\nTone:", "Phrase: the battery died again\nTone:"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """Four finished trials; the one with r=4 on the attention and the one with r=8 on every linear
    layer bundled into bundle/ (they differ in rank and in modules)."""
    folder = tmp_path_factory.mktemp("bundle")
    (folder / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        assert main(["-q", "run", "sweep.yaml"]) == 0
        numbers = {(t.params["r"], t.params["target_modules"]): t.number for t in _study(folder).trials}
        small, large = numbers[(4, "attention")], numbers[(8, "all-linear")]
        assert main(["export", "--trial", str(small), "--trial", str(large), "--out", "bundle"]) == 0
    return folder


def _study(folder: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "mlruns" / "optuna.journal"))
    )
    return optuna.load_study(study_name="bundled", storage=storage)


def _trials(folder: Path) -> list[int]:
    """The bundle's trials, in its order."""
    return [a["trial"] for a in json.loads((folder / "bundle" / "parity.json").read_text())["adapters"]]


def _peft(folder: Path, trial: int | None) -> torch.nn.Module:
    """PyTorch's base, with the trial's adapter from its MLflow run (None: the base alone)."""
    base = AutoModelForCausalLM.from_pretrained(ensure_tiny_base()).eval()
    if trial is None:
        return base
    run_id = _study(folder).trials[trial].user_attrs["mlflow_run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
    adapter = client.download_artifacts(run_id, "adapter", str(folder / f"peft-{trial}"))
    return PeftModel.from_pretrained(base, adapter).eval()


def _torch_greedy(model, tokenizer, prompt: str, new: int = 8) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, max_new_tokens=new, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    tokens = out[0, ids.shape[1] :].tolist()
    return tokens[: tokens.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in tokens else tokens


def _genai_greedy(model, adapters, name: str | None, tokenizer, prompt: str, new: int = 8) -> list[int]:
    ids = tokenizer(prompt)["input_ids"]
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + new, do_sample=False)
    generator = og.Generator(model, params)
    if name is not None:
        generator.set_active_adapter(adapters, name)
    generator.append_tokens(ids)
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens[: tokens.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in tokens else tokens


def test_one_base_and_an_adapter_per_trial_each_gated_and_smaller_than_merged_exports(swept):
    bundle = swept / "bundle"
    trials = _trials(swept)
    assert sorted(p.name for p in bundle.glob("*.onnx_adapter")) == sorted(
        f"trial-{n}.onnx_adapter" for n in trials
    )
    parity = json.loads((bundle / "parity.json").read_text())
    assert parity["passed"] and parity["switch"]["passed"] and parity["base"]["passed"]
    assert [a["rank"] for a in parity["adapters"]] == [4, 8]
    for a in parity["adapters"]:
        checks = {c["name"]: c["passed"] for c in a["measured"]["checks"]}
        assert checks == {
            "eval perplexity": True,
            "greedy generation": True,
            "largest logit difference": True,
            "PyTorch eval loss": True,  # each trial's rebuilt model gave its own eval loss
        }
        assert a["measured"]["identical"] + a["measured"]["ties"] == parity["prompts"] == 6
    # one base and two adapters weigh less than two merged exports
    assert (
        parity["size_bytes"] < parity["adapters"][0]["merged_bytes"] + parity["adapters"][1]["merged_bytes"]
    )
    # the base graph takes every LoRA matrix as an optional input of dynamic rank, listed once
    graph = onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph
    lora = [i for i in graph.input if ".lora_" in i.name]
    assert len(lora) == len({i.name for i in lora}) == 4 * 7 * 2  # 4 layers x 7 projections x A, B
    assert all("lora_r" in [d.dim_param for d in i.type.tensor_type.shape.dim] for i in lora)
    defaults = {t.name: list(t.dims) for t in graph.initializer if ".lora_" in t.name}
    assert set(defaults) == {i.name for i in lora} and all(0 in dims for dims in defaults.values())


def test_each_adapter_generates_what_pytorch_generates_with_it_and_none_gives_the_base(swept):
    bundle = swept / "bundle"
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_base())
    model = og.Model(str(bundle))
    adapters = og.Adapters(model)
    outputs = {}
    for trial in [*_trials(swept), None]:
        name = None if trial is None else f"trial-{trial}"
        if name is not None:
            adapters.load(str(bundle / f"{name}.onnx_adapter"), name)
        reference = _peft(swept, trial)
        for prompt in PROMPTS:
            want = _torch_greedy(reference, tokenizer, prompt)
            assert _genai_greedy(model, adapters, name, tokenizer, prompt) == want, (name, prompt)
            outputs[name, prompt] = want
    # the adapters change what is generated: a bundle that ignored them would not pass the above
    assert any(outputs[f"trial-{t}", p] != outputs[None, p] for t in _trials(swept) for p in PROMPTS)


def test_switching_adapters_back_and_forth_gives_each_one_s_logits_again(swept):
    """A -> B -> A through ONNX Runtime's LoraAdapter on one session, same input shape each time."""
    bundle = swept / "bundle"
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_base())
    session = ort.InferenceSession(str(bundle / "model.onnx"))
    config = json.loads((bundle / "genai_config.json").read_text())["model"]["decoder"]
    ids = np.array([tokenizer(PROMPTS[0])["input_ids"]])
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for i in session.get_inputs():
        if i.name.startswith("past_key_values."):
            feeds[i.name] = np.zeros((1, config["num_key_value_heads"], 0, config["head_size"]), np.float32)
    loaded = []

    def logits(trial: int) -> np.ndarray:
        adapter = ort.LoraAdapter()
        adapter.Load(str(bundle / f"trial-{trial}.onnx_adapter"))
        loaded.append(adapter)  # RunOptions holds a pointer, not a reference
        options = ort.RunOptions()
        options.add_active_adapter(adapter)
        return session.run(["logits"], feeds, options)[0]

    a, b = _trials(swept)
    first, other, again = logits(a), logits(b), logits(a)
    assert np.abs(first - other).max() > 1e-2  # two different adapters
    assert np.abs(first - again).max() == 0.0


def test_the_readme_snippet_runs_as_printed_and_switches_adapters(swept, tmp_path):
    """docs/handover.md's onnxruntime-genai snippet, unchanged, on the bundle at the path it names."""
    readme = (Path(__file__).parents[1] / "docs" / "handover.md").read_text(encoding="utf-8")
    snippet = re.search(r"<!-- bundle snippet -->\n```python\n(.*?)```", readme, re.DOTALL).group(1)
    where = re.search(r'Path\("([^"]+)"\)', snippet).group(1)
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).symlink_to(swept / "bundle")
    done = subprocess.run(
        [sys.executable, "-c", snippet],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"trial-{n}" for n in sorted(_trials(swept))]
    assert all(line.split(":", 1)[1].strip() for line in lines)  # each generated something


def test_promote_top_registers_one_version_whose_pyfunc_takes_the_adapter(swept, monkeypatch, capsys):
    monkeypatch.chdir(swept)
    uri = f"sqlite:///{swept}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["promote", "--top", "2"]) == 0
    assert "as an adapter bundle" in capsys.readouterr().out
    client = mlflow.MlflowClient(uri)
    version = client.get_model_version_by_alias("tones", "champion")
    study = _study(swept)
    best_two = sorted((t for t in study.trials), key=lambda t: t.value)[:2]
    assert version.tags["lorasweep.bundle"] == ",".join(str(t.number) for t in best_two)
    assert version.tags["lorasweep.gate"] == "passed"
    for t in best_two:
        assert version.tags[f"trial-{t.number}.file"] == f"onnx/trial-{t.number}.onnx_adapter"
        assert float(version.tags[f"trial-{t.number}.metric.eval_loss"]) == pytest.approx(t.value, rel=1e-5)
        # what each trial's run recorded of what it trained
        run = client.get_run(t.user_attrs["mlflow_run_id"]).data.tags
        for key, value in run.items():
            if key.startswith("lorasweep.adapter_sha256.") or key == "lorasweep.base":
                assert version.tags[f"trial-{t.number}.{key}"] == value

    model = mlflow.pyfunc.load_model("models:/tones@champion")
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_base())
    for t in best_two:
        want = tokenizer.decode(
            _torch_greedy(_peft(swept, t.number), tokenizer, PROMPTS[1]), skip_special_tokens=True
        )
        assert model.predict([PROMPTS[1]], params={"adapter": f"trial-{t.number}", "max_new_tokens": 8}) == [
            want.strip()
        ]
    # the default is the best trial's; a trial outside the bundle is refused by name
    assert model.predict([PROMPTS[1]], params={"max_new_tokens": 8}) == model.predict(
        [PROMPTS[1]], params={"adapter": str(best_two[0].number), "max_new_tokens": 8}
    )
    with pytest.raises(Exception, match=r"params\.adapter must be one of"):
        model.predict([PROMPTS[1]], params={"adapter": "trial-99"})


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top", "9"], "--top must be between 1 and the 4 distinct complete trials"),
        (["--top", "2", "--trial", "0"], "--top and --trial must not both be given"),
        (["--top", "2", "--precision", "int8"], "an adapter bundle must be fp32"),
    ],
)
def test_a_bundle_it_cannot_make_is_refused_before_anything_is_written(
    swept, monkeypatch, capsys, args, message
):
    monkeypatch.chdir(swept)
    assert main(["export", *args, "--out", "refused"]) == 2
    assert message in capsys.readouterr().err
    assert not (swept / "refused").exists() and not list(swept.glob(".refused-build-*"))


def test_adapters_the_tools_cannot_take_are_refused_naming_the_trial(tmp_path):
    plain = tmp_path / "trial-1"
    plain.mkdir()
    (plain / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    dora = tmp_path / "trial-2"
    dora.mkdir()
    (dora / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "use_dora": True, "modules_to_save": ["lm_head"]})
    )
    check_adapters({"trial-1": plain})  # plain LoRA passes
    with pytest.raises(UserError) as refused:
        check_adapters({"trial-1": plain, "trial-2": dora})
    text = str(refused.value)
    assert "trial-2: it uses DoRA" in text and "trial-2: it trains whole modules (lm_head)" in text
    assert "trial-1" not in text.split("but:")[1]


def _finished(study: optuna.Study, values, metrics: dict[str, float], twin: int | None = None) -> None:
    attrs = {"metrics": metrics, **({"duplicate_of": twin} if twin is not None else {})}
    study.add_trial(optuna.trial.create_trial(values=values, user_attrs=attrs))


def test_top_ranks_by_the_objective_and_counts_a_duplicate_once():
    study = optuna.create_study(direction="maximize")
    for f1 in (0.5, 0.9, 0.7):
        _finished(study, [f1], {"f1": f1})
    _finished(study, [0.9], {"f1": 0.9}, twin=1)  # trial 3 reused trial 1's result
    assert [t.number for t in top(study, (), 3)] == [1, 2, 0]
    with pytest.raises(UserError, match="between 1 and the 3 distinct complete trials"):
        top(study, (), 4)


def test_top_of_several_objectives_takes_the_pareto_front_in_the_rules_order():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["f1", "eval_loss"])
    for f1, loss in ((0.9, 0.5), (0.8, 0.3), (0.5, 0.9), (0.85, 0.4)):  # trial 2 is dominated
        _finished(study, [f1, loss], {"f1": f1, "eval_loss": loss})
    assert [t.number for t in top(study, (Criterion("eval_loss"),), 3)] == [1, 3, 0]
    assert [t.number for t in top(study, (), 3)] == [0, 3, 1]  # the default rule: f1 first
    with pytest.raises(UserError, match="3 distinct trials on its Pareto front"):
        top(study, (), 4)
