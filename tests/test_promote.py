"""Promotion of a real tiny sweep: the registered pyfunc, the ONNX export run by onnxruntime-genai,
the parity gate and the champion alias.

Trains two short trials once per module (about 20 s) and exports fp32 only: Model Builder takes
about 12 s a promotion. The quantized exports, a gate that fails and the dynamo path for an
architecture Model Builder lacks are in tests/test_promote_slow.py (`make test-slow`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import mlflow
import onnxruntime_genai as og
import optuna
import pytest
from mlflow import MlflowClient

from lorasweep.search.cli import main

from .stubs import Scripted, StubRunner

SWEEP = """\
study: {name: promo, metric: eval_loss, sampler: {type: grid, seed: 0}, n_trials: 2}
data: {train_split: "train[:400]", eval_split: "train[1400:1460]"}
train: {max_steps: 20, eval_steps: 10, logging_steps: 10, per_device_train_batch_size: 16, r: 8}
eval: {max_samples: 8, max_new_tokens: 8, log_samples: 8}
promote: {model_name: tone, precisions: [fp32]}
search_space:
  learning_rate: {type: choice, values: [0.005, 0.01]}
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A finished two-trial sweep, then trial 0 promoted."""
    folder = tmp_path_factory.mktemp("promote")
    (folder / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        assert main(["-q", "run", "sweep.yaml"]) == 0
        assert main(["promote", "--trial", "0"]) == 0
    return folder


@pytest.fixture
def client(swept, monkeypatch) -> MlflowClient:
    monkeypatch.chdir(swept)
    uri = f"sqlite:///{swept}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # for pyfunc.load_model("models:/...")
    return MlflowClient(uri)


def _study(folder):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "mlruns" / "optuna.journal"))
    )
    return optuna.load_study(study_name="promo", storage=storage)


def test_the_champion_is_a_version_that_carries_its_trial(swept, client):
    trial = _study(swept).trials[0]
    version = client.get_model_version_by_alias("tone", "champion")
    assert str(version.version) == "1" and version.run_id == trial.user_attrs["mlflow_run_id"]
    tags = version.tags
    assert tags["lorasweep.trial_number"] == "0" and tags["lorasweep.gate"] == "passed"
    assert float(tags["param.learning_rate"]) == trial.params["learning_rate"]
    assert float(tags["metric.eval_loss"]) == pytest.approx(
        trial.user_attrs["metrics"]["eval_loss"], rel=1e-5
    )
    # size, load time and latency of both runtimes are on the version
    for key in ("fp32.size_mb", "fp32.load_seconds", "fp32.ms_per_token", "pytorch.ms_per_token"):
        assert float(tags[key]) > 0
    assert client.get_run(version.run_id).data.tags["lorasweep.registered_as"] == "tone/1"


def test_the_registered_model_generates_what_the_trial_generated(swept, client):
    """pyfunc from models:/tone@champion (base + adapter) gives the trial's own eval generations."""
    run_id = _study(swept).trials[0].user_attrs["mlflow_run_id"]
    table = json.loads(
        (swept / client.download_artifacts(run_id, "generations.json", str(swept))).read_text()
    )
    prompts = [row[0] for row in table["data"]]
    outputs = [row[2] for row in table["data"]]
    model = mlflow.pyfunc.load_model("models:/tone@champion")
    # the same batch as the sweep's generation (eval.batch_size 32 holds all 8 prompts), same cap
    assert model.predict(prompts, params={"max_new_tokens": 8, "batch_size": 32}) == outputs
    assert any(
        out.split(",")[0] in ("positive", "negative", "neutral", "mixed", "sarcastic") for out in outputs
    )


def test_the_onnx_export_runs_in_onnxruntime_genai_like_pytorch(swept, client):
    export = swept / "exports" / "tone" / "v1"
    parity = json.loads((export / "parity.json").read_text())
    fp32 = next(m for m in parity["models"] if m["name"] == "fp32")
    assert parity["passed"] and parity["prompts"] == 8 and parity["eval_rows"] == 60
    assert parity["speed_runs"] == 5 and parity["speed_prompts"] == 8
    assert fp32["identical"] == 8 and fp32["max_logit_diff"] < 1e-3
    assert fp32["perplexity"] == pytest.approx(
        next(m for m in parity["models"] if m["name"] == "pytorch")["perplexity"], rel=1e-3
    )

    # A user's own onnxruntime-genai session, its own tokenizer: the same text as the pyfunc.
    model = og.Model(str(export / "fp32"))
    tokenizer = og.Tokenizer(model)
    prompt = "Phrase: the delivery was awful\nTone:"
    params = og.GeneratorParams(model)
    ids = tokenizer.encode(prompt)
    params.set_search_options(max_length=len(ids) + 8, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    while not generator.is_done():
        generator.generate_next_token()
    text = tokenizer.decode(generator.get_sequence(0)[len(ids) :]).replace("<|eos|>", "").strip()
    expected = mlflow.pyfunc.load_model("models:/tone@champion").predict(
        [prompt], params={"max_new_tokens": 8}
    )
    assert [text] == expected
    # the exports are logged with the version, the evidence beside them
    source = client.get_model_version("tone", "1").source
    logged = {a.path for a in mlflow.artifacts.list_artifacts(artifact_uri=f"{source}/onnx")}
    assert {"onnx/fp32", "onnx/parity.json"} <= logged


def test_a_second_promotion_moves_the_alias_and_keeps_the_old_version(swept, client, capsys):
    assert main(["promote", "--trial", "1"]) == 0
    assert "champion: models:/tone@champion -> version 2 (was version 1)" in capsys.readouterr().out
    assert str(client.get_model_version_by_alias("tone", "champion").version) == "2"
    old = client.get_model_version("tone", "1")
    assert old.aliases == [] and old.tags["lorasweep.trial_number"] == "0" and old.status == "READY"
    assert (swept / "exports" / "tone" / "v1" / "fp32" / "model.onnx").is_file()
    # promoting the champion's trial again registers nothing
    assert main(["promote", "--trial", "1"]) == 0
    assert "already is the champion" in capsys.readouterr().out
    assert len(client.search_model_versions("name = 'tone'")) == 2


def test_the_parity_table_says_what_is_gated_and_how_speed_was_measured(tmp_path):
    from lorasweep.search.handover._parity import Check, Measured, Parity
    from lorasweep.search.handover._promote import format_parity

    def measured(name, *checks, **figures):
        return Measured(
            name, "tool", 2**20, 0.1, checks=[Check(c, True, "x", "y") for c in checks], **figures
        )

    parity = Parity(
        8,
        60,
        [
            measured("pytorch", ms_per_token=8.0),
            measured(
                "fp32",
                "eval perplexity",
                "greedy generation",
                "largest logit difference",
                ms_per_token=0.4,
                speedup=20.0,
                identical=8,
                max_logit_diff=4e-5,
            ),
            measured(
                "int8", "eval perplexity", ms_per_token=0.2, speedup=40.0, identical=7, max_logit_diff=1.7
            ),
        ],
    )
    table = format_parity(parity).splitlines()
    assert table[0].startswith("reported") and table[0].endswith("| gated")
    assert table[3].split("|")[1].split() == ["+0.00%", "4e-05", "8/8"]  # fp32: all three gated
    assert table[4].split("|")[1].split() == ["+0.00%", "(1.7)", "(7/8)"]  # int8: perplexity only
    assert "20.0x" in table[3] and "40.0x" in table[4]
    assert (
        "gated (decide the champion): change (fp32, int8), max |dlogit| (fp32), greedy same (fp32)"
        in table[5]
    )
    assert "medians of 5 runs over 8 eval prompts" in table[6]
    parity.save(tmp_path / "parity.json")  # what a completing promote reads back
    assert Parity.load(tmp_path / "parity.json") == parity


# -- a promote killed half-way ---------------------------------------------------------------------
# Each test promotes the trial that is not the champion in a subprocess that dies at one step (a
# kill -9: os._exit runs no finally and no atexit), with its own TMPDIR to watch the scratch folders.
_DIES_AFTER = """
import os, sys
from mlflow import MlflowClient
from lorasweep.search.cli import main
call = getattr(MlflowClient, sys.argv[1])
def then_die(self, *args, **kwargs):
    call(self, *args, **kwargs)
    os._exit(9)
setattr(MlflowClient, sys.argv[1], then_die)
sys.exit(main(["-q", "promote", "--trial", sys.argv[2]]))
"""

# SIGTERM to a promote called from Python (no CLI handler) just after its LoggedModel exists; the
# export is skipped (an empty parity report stands in for it): only the cleanup is tested.
_TERMINATED = """
import os, signal, sys, time
from mlflow import MlflowClient
from lorasweep.search import load_study
from lorasweep.search.handover import _promote as promotion
from lorasweep.search.handover._parity import Parity

def exported(*args):
    return Parity(0, 0, []), {}
promotion._export_and_measure = exported
create = MlflowClient.create_logged_model
def then_terminated(self, *args, **kwargs):
    logged = create(self, *args, **kwargs)
    print(logged.model_id, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)
MlflowClient.create_logged_model = then_terminated
promotion.promote(load_study("promo", None), int(sys.argv[1]), log=lambda line: None)
"""


def _challenger(client) -> int:
    """The trial that is not the champion now (tests before this one may have moved the alias)."""
    return 1 - int(client.get_model_version_by_alias("tone", "champion").tags["lorasweep.trial_number"])


def _in_subprocess(folder, tmp, script, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        check=False,
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _leftovers(swept, tmp) -> list[str]:
    """Scratch folders of promote: in the temp folder and beside the exports."""
    return [p.name for p in tmp.glob("lorasweep-*")] + [
        p.name for p in (swept / "exports" / "tone").glob(".*")
    ]


def _logged_models(client, run_id):
    experiment = client.get_run(run_id).info.experiment_id
    return client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'")


def test_a_promote_terminated_from_python_fails_its_logged_model_and_leaves_no_scratch(
    swept, client, tmp_path
):
    trial = _challenger(client)
    done = _in_subprocess(swept, tmp_path, _TERMINATED, trial)
    assert done.returncode != -15, "SIGTERM ended the process on the spot: nothing was cleaned up"
    model_id = done.stdout.split()[0]
    assert client.get_logged_model(model_id).status.name == "FAILED"
    assert _leftovers(swept, tmp_path) == []


@pytest.mark.slow
def test_a_promote_killed_after_registering_is_completed_by_the_next(
    swept, client, tmp_path, monkeypatch, capsys
):
    """Killed once the version row exists: the rerun gives that version its exports, run tag and
    alias instead of registering another, and removes what the dead process left."""
    trial = _challenger(client)
    run_id = _study(swept).trials[trial].user_attrs["mlflow_run_id"]
    versions = len(client.search_model_versions("name = 'tone'"))
    killed = _in_subprocess(swept, tmp_path, _DIES_AFTER, "create_model_version", trial)
    assert killed.returncode == 9, killed.stderr[-3000:]
    half = max(client.search_model_versions("name = 'tone'"), key=lambda v: int(v.version))
    assert int(half.version) == versions + 1 and half.run_id == run_id and half.aliases == []
    assert not (swept / "exports" / "tone" / f"v{half.version}").exists()
    assert _leftovers(swept, tmp_path)  # the kill left its scratch folders

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["promote", "--trial", str(trial)]) == 0
    assert "completing the promotion of trial" in capsys.readouterr().out
    assert len(client.search_model_versions("name = 'tone'")) == versions + 1
    assert client.get_model_version_by_alias("tone", "champion").version == half.version
    assert (swept / "exports" / "tone" / f"v{half.version}" / "fp32" / "model.onnx").is_file()
    assert client.get_run(run_id).data.tags["lorasweep.registered_as"] == f"tone/{half.version}"
    assert _leftovers(swept, tmp_path) == []


@pytest.mark.slow
def test_a_promote_killed_after_its_logged_model_leaves_nothing_pending(
    swept, client, tmp_path, monkeypatch, capsys
):
    """Killed between create_logged_model and finalize: the rerun marks that model FAILED and
    promotes afresh."""
    trial = _challenger(client)
    run_id = _study(swept).trials[trial].user_attrs["mlflow_run_id"]
    versions = len(client.search_model_versions("name = 'tone'"))
    killed = _in_subprocess(swept, tmp_path, _DIES_AFTER, "create_logged_model", trial)
    assert killed.returncode == 9, killed.stderr[-3000:]
    assert [m.status.name for m in _logged_models(client, run_id)].count("PENDING") == 1

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["promote", "--trial", str(trial)]) == 0
    assert "FAILED: the promote that made it died" in capsys.readouterr().out
    assert "PENDING" not in [m.status.name for m in _logged_models(client, run_id)]
    assert len(client.search_model_versions("name = 'tone'")) == versions + 1
    assert client.get_model_version_by_alias("tone", "champion").run_id == run_id
    assert _leftovers(swept, tmp_path) == []


@pytest.mark.parametrize(
    ("promote", "message"),
    [
        (
            "{precisions: [fp16]}",
            "promote.precisions must be a list of fp32, int8, int4, but got precisions=['fp16']",
        ),
        ("{max_logit_diff: 0}", "promote.max_logit_diff must be a number > 0, but got max_logit_diff=0"),
        (
            "{max_perplexity_change: {int8: -1}}",
            "promote.max_perplexity_change must map precisions to relative",
        ),
        ("{model_name: 'a b'}", "promote.model_name must use only letters, digits"),
        # it names exports/NAME/vK and .promote-NAME.lock: `..` would write ./v1 beside exports/
        ("{model_name: '..'}", "promote.model_name must name a folder of its own, but got name='..'"),
        ("{model_name: " + "m" * 101 + "}", "promote.model_name must be at most 100 characters"),
        ("{alias: best}", "a key of promote must be one of select, model_name, precisions"),
        (
            "{max_eval_loss_change: -0.1}",
            "promote.max_eval_loss_change must be a relative change >= 0, but got max_eval_loss_change=-0.1",
        ),
    ],
)
def test_a_bad_promote_section_is_refused_with_its_line(write, promote, message):
    from lorasweep.search import SweepError, load_sweep

    with pytest.raises(SweepError, match=re.escape(message)) as error:
        load_sweep(write(f"study: {{name: x}}\npromote: {promote}\n"))
    assert "sweep.yaml:2:" in str(error.value)


def test_each_precision_is_one_registry_entry_that_the_parser_the_sweep_file_and_the_gate_read():
    """A new precision is one entry in search/precisions.py: nothing else lists them."""
    from lorasweep.search.cli import build_parser
    from lorasweep.search.handover._parity import Limits, Measured, gate
    from lorasweep.search.precisions import PRECISIONS, REGISTRY
    from lorasweep.search.sweepfile import PromoteSpec

    assert PRECISIONS[0] == "fp32" and REGISTRY["fp32"].olive_pass is None  # the reference
    assert all(REGISTRY[p].olive_pass is not None for p in PRECISIONS[1:])
    commands = build_parser()._subparsers._group_actions[0].choices  # argparse lists them nowhere public
    flags = [
        action
        for command in commands.values()
        for action in command._actions
        if "--precision" in action.option_strings
    ]
    assert flags and all(tuple(f.choices) == PRECISIONS for f in flags)
    assert all(p.summary in " ".join(f.help.split()) for f in flags for p in REGISTRY.values())
    assert PromoteSpec().max_perplexity_change == {p.name: p.max_perplexity_change for p in REGISTRY.values()}
    limits = Limits(0.1, PromoteSpec().max_perplexity_change)
    for precision in PRECISIONS:
        measured = Measured(precision, "", 0, 0.0, identical=3)
        gate(measured, 3, limits, precision)
        assert len(measured.checks) == (3 if REGISTRY[precision].exact else 1)  # exact: tokens and logits too


def test_promote_refuses_trials_it_cannot_hand_over_before_doing_anything(stores, write, capsys):
    from lorasweep.search import RunOptions, load_sweep, run_sweep

    sweep = load_sweep(
        write(
            "study: {name: stub, sampler: {type: grid}, n_trials: 2, pruner: {type: threshold, upper: 5}}\n"
            "search_space: {lora_r: {type: choice, values: [2, 4]}}\n"
        )
    )
    study = run_sweep(
        sweep,
        RunOptions(quiet=True, plots=False),
        runner=StubRunner(
            lambda r: Scripted(
                curve={10: {"eval_loss": 9.0}} if r == 2 else {},  # r=2 is pruned by the threshold
                metrics={"eval_loss": 1 / r},
            )
        ),
    )
    pruned = next(t.number for t in study.trials if t.state.name == "PRUNED")
    assert main(["promote", "--trial", "7"]) == 2
    assert (
        "--trial must be a trial of study 'stub', but got trial=7. Its trials are 0..1."
        in capsys.readouterr().err
    )
    assert main(["promote", "--trial", str(pruned)]) == 2
    assert f"a trial to hand over must be COMPLETE, but trial {pruned} is PRUNED" in capsys.readouterr().err
    # the complete trial logged no adapter (a stub): refused, and nothing was registered or written
    assert main(["promote"]) == 2
    assert "must have its adapter logged" in capsys.readouterr().err
    assert MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db").search_registered_models() == []
    assert not any((stores / "exports").rglob("*.onnx")) if (stores / "exports").exists() else True
