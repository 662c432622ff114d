"""Parallel sweeps with real worker processes, and both stores checked afterwards: on this machine
(`run --workers 2`: the journal and MLflow's SQLite; slow), and as on several machines (PostgreSQL
as the study storage, an MLflow server backed by PostgreSQL; service). Then a worker is killed
mid-trial: the other finishes the budget and the dead worker's trial is failed."""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from lorasweep.search import RunOptions, load_sweep, run_sweep
from lorasweep.search.storage import open_storage

from .conftest import spawn_lorasweep
from .test_resilience import GRID, _ask, curve_runner

SWEEP = """\
study: {{name: {name}, metric: eval_loss, sampler: {{type: random, seed: 0}}, n_trials: {trials}}}
data: {{train_split: "train[:200]"}}
train: {{max_steps: {steps}, logging_steps: 5, eval_steps: {eval_steps}, per_device_train_batch_size: 8}}
eval: {{max_samples: 8, max_new_tokens: 4}}
search_space:
  learning_rate: {{type: float, low: 1e-3, high: 1e-2, log: true}}
  lora_r: {{type: choice, values: [2, 4]}}
"""


@dataclasses.dataclass
class Backend:
    storage: str | None  # None: the journal under mlruns/
    tracking: str

    def args(self) -> list[str]:
        storage = ["--storage", self.storage] if self.storage else []
        return [*storage, "--tracking-uri", self.tracking]

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=open_storage(self.storage))


@pytest.fixture(scope="module")
def optuna_db(postgres):
    return postgres.create_database("optuna")


@pytest.fixture(
    params=[
        pytest.param("local", marks=pytest.mark.slow),
        pytest.param("postgres", marks=pytest.mark.service),
    ]
)
def backend(request, tmp_path, monkeypatch) -> Backend:
    monkeypatch.chdir(tmp_path)
    if request.param == "local":
        uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
        return Backend(None, uri)
    server = request.getfixturevalue("mlflow_server")
    return Backend(request.getfixturevalue("optuna_db"), server)


def _check_stores(study: optuna.Study, client: MlflowClient, budget: int) -> dict[int, object]:
    """Budget met exactly, trial numbers unique, one MLflow run per trial under the one parent, which
    is FINISHED; no run left RUNNING. Returns each trial's run."""
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers)
    assert len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == budget
    assert not [t for t in trials if t.state == TrialState.RUNNING]

    experiment = client.get_experiment_by_name(study.study_name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags["lorasweep.role"] == "study"]
    assert len(parents) == 1 and parents[0].info.run_id == study.user_attrs["mlflow_parent_run_id"]
    assert parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["n_complete"] == budget
    children = [r for r in runs if r.data.tags["lorasweep.role"] == "trial"]
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    by_number: dict[int, list] = {}
    for run in children:
        by_number.setdefault(int(run.data.tags["lorasweep.trial_number"]), []).append(run)
    ran = [t for t in trials if t.state != TrialState.WAITING]  # a WAITING trial never started
    assert sorted(by_number) == sorted(t.number for t in ran)
    assert all(len(found) == 1 for found in by_number.values())
    for trial in ran:
        run = by_number[trial.number][0]
        assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
        if trial.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED" and run.data.metrics["eval_loss"] == trial.value
    return {n: found[0] for n, found in by_number.items()}


def test_two_workers_share_one_study_and_meet_the_budget_exactly(backend, tmp_path):
    name = f"pair-{os.getpid()}-{backend.storage is None}"
    (tmp_path / "sweep.yaml").write_text(
        SWEEP.format(name=name, trials=5, steps=20, eval_steps=10), encoding="utf-8"
    )
    run = spawn_lorasweep(tmp_path, "run", "sweep.yaml", "--workers", "2", *backend.args())
    assert run.wait(timeout=600) == 0, run.stderr.read()

    study = backend.study(name)
    _check_stores(study, MlflowClient(backend.tracking), budget=5)
    workers = {t.user_attrs["worker"] for t in study.trials if "worker" in t.user_attrs}
    assert len(workers) == 2  # both processes ran trials
    runs = MlflowClient(backend.tracking)
    best = runs.get_run(study.best_trial.user_attrs["mlflow_run_id"])
    assert "adapter" in {a.path for a in runs.list_artifacts(best.info.run_id)}


def _wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _study_if_started(backend: Backend, name: str) -> optuna.Study | None:
    try:
        study = backend.study(name)
    except KeyError:  # not created yet
        return None
    return study if "mlflow_parent_run_id" in study.user_attrs else None


@pytest.mark.service
def test_a_worker_killed_mid_trial_leaves_the_budget_to_the_other(
    tmp_path, monkeypatch, optuna_db, mlflow_server
):
    monkeypatch.chdir(tmp_path)
    backend = Backend(optuna_db, mlflow_server)
    name = f"kill-{os.getpid()}"
    (tmp_path / "sweep.yaml").write_text(
        SWEEP.format(name=name, trials=4, steps=60, eval_steps=20), encoding="utf-8"
    )
    first = spawn_lorasweep(tmp_path, "run", "sweep.yaml", *backend.args())
    _wait_for(lambda: _study_if_started(backend, name) is not None, "the study and its parent run")
    # The second worker joins with the storage alone: the sweep and the tracking URI are the study's.
    second = spawn_lorasweep(tmp_path, "worker", "--study", name, "--storage", optuna_db)

    def seconds_trial() -> optuna.trial.FrozenTrial | None:
        assert second.poll() is None, second.stderr.read()
        for trial in backend.study(name).get_trials(states=(TrialState.RUNNING,)):
            if trial.user_attrs.get("worker", "").split(":")[1:2] == [str(second.pid)]:
                return trial if "mlflow_run_id" in trial.user_attrs else None
        return None

    _wait_for(lambda: seconds_trial() is not None, "a trial of the second worker")
    time.sleep(1.0)  # into training
    killed = seconds_trial()
    os.kill(second.pid, signal.SIGKILL)
    second.wait()
    assert first.wait(timeout=600) == 0, first.stderr.read()

    study = backend.study(name)
    client = MlflowClient(backend.tracking)
    runs = _check_stores(study, client, budget=4)
    failed = study.trials[killed.number]
    assert failed.state == TrialState.FAIL and failed.user_attrs["error"] == "worker died mid-trial"
    run = runs[killed.number]
    assert run.info.status == "KILLED" and "worker stopped" in run.data.tags["lorasweep.error"]
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == killed.number)
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params


@pytest.mark.service
def test_on_postgresql_the_heartbeat_fails_another_machines_dead_trial(
    tmp_path, monkeypatch, write, optuna_db, _empty_mlflow_db
):
    """A worker on another machine cannot be checked by its process id: its trial is failed when its
    heartbeat stops, by whichever worker looks next (here the run, in this process)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "mlflow.db").write_bytes(_empty_mlflow_db.read_bytes())
    monkeypatch.setattr("lorasweep.search.storage.HEARTBEAT_S", 1)
    monkeypatch.setattr("lorasweep.search.storage.GRACE_S", 2)
    sweep = load_sweep(
        write(GRID.format(metric="f1", seed=0, extra="").replace("name: stub", f"name: hb{os.getpid()}"))
    )
    options = RunOptions(quiet=True, plots=False, n_trials=1, storage=optuna_db)
    study = run_sweep(sweep, options, runner=curve_runner())
    orphan = _ask(study)
    orphan.set_user_attr("worker", "another-machine:4242:0")
    study._storage.record_heartbeat(orphan._trial_id)  # its last sign of life
    time.sleep(3)

    study = run_sweep(sweep, dataclasses.replace(options, n_trials=3), runner=curve_runner())
    assert study.trials[orphan.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == orphan.number]
    assert len(retries) == 1 and retries[0].params == orphan.params
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 3
