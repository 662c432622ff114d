"""A real sweep on the tiny model: the Optuna study and the MLflow record it leaves, and a rerun."""

from __future__ import annotations

import json
import os
import re

import optuna
import pytest
from mlflow import MlflowClient

from lorasweep.search.cli import main

SWEEP = """\
study: {name: e2e, metric: f1, sampler: {type: random, seed: 3}, n_trials: 2}
data: {path: builtin:tone, train_split: "train[:200]", prompt_template: "Phrase: {phrase}\\nTone:",
       response_template: " {tone}, about the {topic}", label_column: tone}
train: {max_steps: 4, logging_steps: 2, eval_steps: 2, per_device_train_batch_size: 8}
eval: {max_samples: 8, max_new_tokens: 8, log_samples: 4}
search_space:
  learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}
  lora_r: {type: choice, values: [2, 4]}
  lora_alpha: {per_rank: 2}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Run the sweep once in its own folder; the tests below read both stores."""
    folder = tmp_path_factory.mktemp("e2e")
    (folder / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # trials of a second or two
        assert main(["-q", "run", "sweep.yaml"]) == 0
    return folder


def _stores(folder):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "mlruns" / "optuna.journal"))
    )
    return optuna.load_study(study_name="e2e", storage=storage), MlflowClient(
        f"sqlite:///{folder}/mlruns/mlflow.db"
    )


def test_study_has_the_budget_of_trials_with_their_runs(finished, monkeypatch):
    study, client = _stores(finished)
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", client.tracking_uri
    )  # load_table searches the fluent API's store
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("lorasweep.role") == "study"]
    children = [r for r in runs if r.data.tags.get("lorasweep.role") == "trial"]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    assert parent.info.status == "FINISHED" and "base_f1" in parent.data.metrics

    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.run_name == f"trial-{trial.number}" and run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["lorasweep.trial_number"] == str(trial.number)
        # every param, sampled and fixed, under the libraries' names; alpha tied to the rank
        params = run.data.params
        assert float(params["learning_rate"]) == pytest.approx(trial.params["learning_rate"])
        assert params["r"] == str(trial.params["lora_r"])
        assert params["lora_alpha"] == str(2 * trial.params["lora_r"])
        assert params["max_steps"] == "4" and params["per_device_train_batch_size"] == "8"
        # final metrics equal what Optuna got; the eval curve has a point per eval step
        assert run.data.metrics["f1"] == pytest.approx(trial.value)
        assert {
            "eval_loss",
            "eval_perplexity",
            "rouge1",
            "rouge2",
            "rougeL",
            "exact_match",
            "trainable_params",
            "tokens_per_second",
            "train_tokens",
            "eval_seconds",
            "generate_seconds",
            "wall_seconds",
        } <= set(run.data.metrics)
        assert run.data.metrics["train_tokens"] > 0 and run.data.metrics["generate_seconds"] > 0
        # what the trial cost the machine: its own peak memory, and MLflow's system metrics
        assert 100 < run.data.metrics["peak_rss_mb"] < 8000 and "peak_cuda_mb" not in run.data.metrics
        cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
        assert cpu and all(0 <= m.value <= 100 * os.cpu_count() for m in cpu)
        assert run.data.metrics["system/system_memory_usage_megabytes"] > 0
        curve = client.get_metric_history(run.info.run_id, "eval_loss")
        assert [m.step for m in curve][:2] == [2, 4]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"adapter", "generations.json"} <= artifacts
        adapter = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
        assert "adapter/adapter_model.safetensors" in adapter
        table = json.loads(
            (
                finished / client.download_artifacts(run.info.run_id, "generations.json", str(finished))
            ).read_text()
        )
        assert table["columns"] == ["prompt", "reference", "output"] and len(table["data"]) == 4
        # ...and MLflow knows it as a table (the tag its table view and load_table go by)
        loaded = client.load_table(experiment.experiment_id, "generations.json", [run.info.run_id])
        assert loaded.columns.tolist() == table["columns"] and loaded.values.tolist() == table["data"]


def test_trials_json_lists_every_trial(finished, capsys, monkeypatch):
    monkeypatch.chdir(finished)
    assert main(["trials", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["number"] for r in rows] == [0, 1]
    for row in rows:
        assert set(row) == {
            "number",
            "state",
            "params",
            "values",
            "metrics",
            "mlflow_run_id",
            "duration_s",
            "notes",
        }
        assert row["metrics"]["f1"] == row["values"][0] and row["duration_s"] > 0


def test_rerun_continues_the_study_and_reattaches_the_parent(finished, monkeypatch, capsys):
    monkeypatch.chdir(finished)
    assert main(["run", "sweep.yaml", "--trials", "3"]) == 0
    out = capsys.readouterr().out
    assert "study 'e2e': 2/3 trials done" in out
    assert re.search(
        r"^trial +2 COMPLETE f1=\S+ +learning_rate=\S+ lora_r=\d", out, re.MULTILINE
    )  # one line per trial
    assert re.search(r"^best: trial \d f1=\S+ \(base \S+\)", out, re.MULTILINE)
    study, client = _stores(finished)
    assert len(study.trials) == 3
    runs = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    assert sum(r.data.tags.get("lorasweep.role") == "study" for r in runs) == 1
    assert sum(r.data.tags.get("lorasweep.role") == "trial" for r in runs) == 3
    # a budget already met runs nothing
    assert main(["-q", "run", "sweep.yaml", "--trials", "3"]) == 0
    assert len(_stores(finished)[0].trials) == 3


def test_the_same_file_gives_the_same_trials_in_a_fresh_store(finished, tmp_path, monkeypatch):
    """Reproducibility: sampler seed and per-trial seeds are recorded, and a rerun of the file into
    new stores samples the same parameters and trains to the same metrics (on the CPU)."""
    (tmp_path / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "run", "sweep.yaml"]) == 0
    again, client = _stores(tmp_path)
    first, _ = _stores(finished)
    assert len(again.trials) == 2
    for a, b in zip(first.trials, again.trials, strict=False):  # first's 3rd came from --trials 3
        assert a.params == b.params and a.user_attrs["seed"] == b.user_attrs["seed"] == 3 + a.number
        assert a.user_attrs["metrics"] == b.user_attrs["metrics"]
        assert client.get_run(b.user_attrs["mlflow_run_id"]).data.params["seed"] == str(3 + a.number)


def test_resume_needs_only_the_study_name(finished, monkeypatch, capsys):
    monkeypatch.chdir(finished)
    (finished / "sweep.yaml").rename(finished / "elsewhere.yaml")  # the study holds its own copy
    try:
        done = len(_stores(finished)[0].trials)
        assert main(["resume", "e2e", "--trials", str(done + 1)]) == 0
        assert f"study 'e2e': {done}/{done + 1} trials done" in capsys.readouterr().out
        study, client = _stores(finished)
        assert len(study.trials) == done + 1 and study.trials[-1].state.name == "COMPLETE"
        assert main(["-q", "resume", "e2e"]) == 0  # the stored budget is now done + 1: nothing to run
        assert len(_stores(finished)[0].trials) == done + 1
        runs = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
        assert sum(r.data.tags.get("lorasweep.role") == "study" for r in runs) == 1
    finally:
        (finished / "elsewhere.yaml").rename(finished / "sweep.yaml")
    assert main(["resume", "nope"]) == 2
    assert (
        "the study must exist in the storage, but got study='nope'. Studies: e2e" in capsys.readouterr().err
    )
