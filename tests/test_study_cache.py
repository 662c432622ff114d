"""What a study keeps between runs to start sooner: an empty MLflow store copied from a migrated
one, and the base model's scores. And its plots, drawn after the CLI's result line yet before it
exits. Nothing trains."""

from __future__ import annotations

import sqlite3

import mlflow
import pytest
from mlflow import MlflowClient

from lorasweep.objectives import DataSpec
from lorasweep.search import RunOptions, _base_scores, load_sweep, parent, run_sweep
from lorasweep.search.tracking import client

from .stubs import Scripted, StubRunner


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LORASWEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_new_store_is_a_copy_of_the_migrated_template_made_once_per_mlflow_version(in_tmp, cache):
    client(f"sqlite:///{in_tmp}/a/mlflow.db").search_experiments()
    template = cache / f"mlflow-{mlflow.__version__}.db"
    assert template.is_file()
    made = template.stat().st_mtime_ns
    store = MlflowClient(client(f"sqlite:///{in_tmp}/b/mlflow.db")._tracking_client.tracking_uri)
    assert template.stat().st_mtime_ns == made  # copied, not made again
    (default,) = store.search_experiments()
    assert default.artifact_location == f"{in_tmp}/mlruns/0"  # where MLflow itself would put it here
    experiment = store.create_experiment("x")
    assert store.create_run(experiment).info.status == "RUNNING"


def test_a_template_that_is_not_a_migrated_store_is_made_again(in_tmp, cache):
    cache.mkdir()
    template = cache / f"mlflow-{mlflow.__version__}.db"
    template.write_bytes(b"not a database")
    client(f"sqlite:///{in_tmp}/a/mlflow.db").search_experiments()
    with sqlite3.connect(template) as con:
        assert con.execute("SELECT count(*) FROM experiments").fetchone() == (1,)


def test_where_the_cache_cannot_be_written_the_store_is_migrated_in_place(in_tmp, tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("LORASWEEP_CACHE", str(blocked / "cache"))  # under a file: no folder there
    assert [e.name for e in client(f"sqlite:///{in_tmp}/a/mlflow.db").search_experiments()] == ["Default"]


def test_base_scores_are_kept_by_base_data_and_eval_settings_and_a_bad_cache_is_rebuilt(write, cache):
    sweep = load_sweep(write("study: {name: b}\n"))
    key = _base_scores.key(sweep, "cpu")
    assert key is not None and key != _base_scores.key(sweep, "cuda")
    assert _base_scores.recall(key) is None
    _base_scores.remember(key, {"eval_loss": 1.5})
    assert _base_scores.recall(key) == {"eval_loss": 1.5}
    (cache / "base-scores.json").write_text("[1, 2")  # torn, or written by something else
    assert _base_scores.recall(key) is None
    _base_scores.remember(key, {"eval_loss": 1.5})
    assert _base_scores.recall(key) == {"eval_loss": 1.5}


def test_data_not_pinned_by_its_bytes_is_never_cached(write, cache, tmp_path):
    sweep = load_sweep(write("study: {name: b}\n"))
    import dataclasses

    hub = dataclasses.replace(sweep, data=DataSpec(path="someone/a-dataset"))
    assert _base_scores.key(hub, "cpu") is None
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"phrase": "a", "tone": "b", "topic": "c"}\n')
    local = dataclasses.replace(sweep, data=DataSpec(path=str(rows)))
    before = _base_scores.key(local, "cpu")
    rows.write_text('{"phrase": "z", "tone": "b", "topic": "c"}\n')
    assert _base_scores.key(local, "cpu") not in (None, before)


def test_plots_after_closes_the_parent_run_first_and_draws_the_plots_when_the_block_ends(stores, write):
    sweep = load_sweep(write("study: {name: late, metric: eval_loss, n_trials: 2, sampler: random}\n"))
    runner = StubRunner(lambda n: Scripted(curve={10: {"eval_loss": 2.0}}, metrics={"eval_loss": 1.0 + n}))
    with parent.plots_after():
        study = run_sweep(sweep, RunOptions(quiet=True), runner=runner)
        store = MlflowClient("sqlite:///mlruns/mlflow.db")
        run_id = study.user_attrs["mlflow_parent_run_id"]
        assert store.get_run(run_id).info.status == "FINISHED"  # a kill from here leaves nothing RUNNING
        assert not store.list_artifacts(run_id, "report")
    assert "report/report.html" in {a.path for a in store.list_artifacts(run_id, "report")}
