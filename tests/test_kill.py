"""A real sweep process killed mid-trial (SIGKILL, SIGTERM), then run again: both stores checked."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import optuna
import pytest
from mlflow import MlflowClient

from .conftest import spawn_lorasweep

pytestmark = pytest.mark.slow

SWEEP = """\
study: {name: kill, metric: eval_loss, sampler: {type: random, seed: 0}, n_trials: 3}
data: {train_split: "train[:200]"}
train: {max_steps: 150, logging_steps: 10, eval_steps: 50, per_device_train_batch_size: 8}
eval: {max_samples: 8, max_new_tokens: 4}
search_space:
  learning_rate: {type: float, low: 1e-3, high: 1e-2, log: true}
  lora_r: {type: choice, values: [2, 4]}
"""


def _study(folder) -> optuna.Study | None:
    journal = folder / "mlruns" / "optuna.journal"
    if not journal.exists():
        return None
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    if "kill" not in optuna.get_all_study_names(storage):
        return None
    return optuna.load_study(study_name="kill", storage=storage)


def _client(folder) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")


def _wait_for_training(folder, proc: subprocess.Popen, number: int) -> None:
    """Until trial `number` is running with its MLflow run open (and all before it finished)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the sweep ended before it could be stopped: {proc.stderr.read()}"
        study = _study(folder)
        trials = study.get_trials(deepcopy=False) if study else []
        if len(trials) > number and "mlflow_run_id" in trials[number].user_attrs:
            assert trials[number].state.name == "RUNNING"
            time.sleep(1.0)  # into the training loop
            return
        time.sleep(0.2)
    pytest.fail("the sweep never reached the trial")


def test_sigkill_mid_trial_then_rerun_loses_nothing(tmp_path):
    (tmp_path / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
    proc = spawn_lorasweep(tmp_path, "run", "sweep.yaml")
    _wait_for_training(tmp_path, proc, number=1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    study, client = _study(tmp_path), _client(tmp_path)
    first, killed = study.trials
    assert first.state.name == "COMPLETE" and killed.state.name == "RUNNING"
    killed_run = killed.user_attrs["mlflow_run_id"]
    assert client.get_run(killed_run).info.status == "RUNNING"  # what kill -9 leaves behind

    rerun = spawn_lorasweep(tmp_path, "run", "sweep.yaml")
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()

    study = _study(tmp_path)
    trials = study.trials
    # The finished trial and its MLflow run are untouched.
    assert trials[0].state.name == "COMPLETE" and trials[0].values == first.values
    assert trials[0].user_attrs["mlflow_run_id"] == first.user_attrs["mlflow_run_id"]
    first_run = client.get_run(first.user_attrs["mlflow_run_id"])
    assert first_run.info.status == "FINISHED" and first_run.data.metrics["eval_loss"] == first.value
    assert "adapter" in {a.path for a in client.list_artifacts(first_run.info.run_id)}
    # The interrupted trial is failed, its run closed KILLED with the reason, and it ran again.
    assert trials[1].state.name == "FAIL" and trials[1].user_attrs["error"] == "worker died mid-trial"
    run = client.get_run(killed_run)
    assert run.info.status == "KILLED" and "worker stopped" in run.data.tags["lorasweep.error"]
    retry = trials[2]
    assert retry.user_attrs["retry_of"] == 1 and retry.params == killed.params
    assert retry.user_attrs["seed"] == killed.user_attrs["seed"] and retry.state.name == "COMPLETE"
    # The budget of finished trials is met; one parent, no run left RUNNING.
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3
    runs = client.search_runs([client.get_experiment_by_name("kill").experiment_id])
    assert [r.info.status for r in runs if r.data.tags["lorasweep.role"] == "study"] == ["FINISHED"]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len([r for r in runs if r.data.tags["lorasweep.role"] == "trial"]) == len(trials)


def test_sigterm_closes_the_trial_and_resume_runs_it_again(tmp_path):
    (tmp_path / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
    proc = spawn_lorasweep(tmp_path, "run", "sweep.yaml", "--trials", "1")
    _wait_for_training(tmp_path, proc, number=0)
    proc.send_signal(signal.SIGTERM)
    exit_code, stderr = proc.wait(timeout=60), proc.stderr.read()
    assert exit_code == 130, stderr
    assert "interrupted: finished trials are kept" in stderr

    study, client = _study(tmp_path), _client(tmp_path)
    stopped = study.trials[0]
    assert stopped.state.name == "FAIL" and stopped.user_attrs["interrupted"]
    assert client.get_run(stopped.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "KILLED"

    resume = spawn_lorasweep(tmp_path, "resume", "kill")
    assert resume.wait(timeout=300) == 0, resume.stderr.read()
    retry = _study(tmp_path).trials[1]
    assert retry.state.name == "COMPLETE" and retry.user_attrs["retry_of"] == 0
    assert retry.params == stopped.params


def test_three_sigints_within_60_ms_close_every_run_and_leave_no_scratch_folder(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the trial's scratch folder lands here
    (tmp_path / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
    proc = spawn_lorasweep(tmp_path, "run", "sweep.yaml", "--trials", "1")
    _wait_for_training(tmp_path, proc, number=0)
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
    exit_code, stderr = proc.wait(timeout=60), proc.stderr.read()
    assert exit_code == 130, stderr
    assert "interrupted: finished trials are kept" in stderr

    study, client = _study(tmp_path), _client(tmp_path)
    stopped = study.trials[0]
    assert stopped.state.name == "FAIL" and stopped.user_attrs["interrupted"]
    run = client.get_run(stopped.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["lorasweep.state"] == "FAIL"
    assert client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "KILLED"
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("lorasweep-trial")]


def _children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(c) for c in f.read().split()}
    except FileNotFoundError:
        return set()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


# Short trials, and a budget far off: orphaned workers would run on for minutes.
POOL_SWEEP = SWEEP.replace("n_trials: 3", "n_trials: 20").replace("max_steps: 150", "max_steps: 40")
DEATH_S = 10  # a worker is gone within this after its pool is killed


def test_sigkill_of_a_pool_takes_its_workers_down_and_rerun_recovers_their_trials(tmp_path):
    (tmp_path / "sweep.yaml").write_text(
        POOL_SWEEP.replace("eval_steps: 50", "eval_steps: 20"), encoding="utf-8"
    )
    proc = spawn_lorasweep(tmp_path, "run", "sweep.yaml", "--workers", "2")
    workers: set[int] = set()
    try:
        _wait_for_training(tmp_path, proc, number=0)
        workers = _children(proc.pid)
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + DEATH_S
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [w for w in workers if _alive(w)], "workers outlived their pool"
    finally:
        for worker in workers:
            if _alive(worker):
                os.kill(worker, signal.SIGKILL)

    # What kill -9 leaves: the trials being trained RUNNING, in both stores, until the next run.
    client = _client(tmp_path)
    trials = _study(tmp_path).trials
    stopped = [t for t in trials if "mlflow_run_id" in t.user_attrs and t.state.name != "COMPLETE"]
    assert stopped and {t.state.name for t in stopped} == {"RUNNING"}
    # The rerun's budget: what finished, and the stopped trials' retries (queued first).
    budget = len([t for t in trials if t.state.name == "COMPLETE"]) + len(stopped)
    rerun = spawn_lorasweep(tmp_path, "run", "sweep.yaml", "--trials", str(budget))
    assert rerun.wait(timeout=600) == 0, rerun.stderr.read()

    study = _study(tmp_path)
    for trial in stopped:  # failed for its dead worker, its run closed, and run again
        failed = study.trials[trial.number]
        assert failed.state.name == "FAIL" and failed.user_attrs["error"] == "worker died mid-trial"
        assert client.get_run(trial.user_attrs["mlflow_run_id"]).info.status == "KILLED"
        retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == trial.number)
        assert retry.params == trial.params and retry.state.name == "COMPLETE"
    runs = client.search_runs([client.get_experiment_by_name("kill").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
