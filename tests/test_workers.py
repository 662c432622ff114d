"""Several workers on one study: the slot rule, real processes racing for the budget's last slots,
a killed worker's trial taken over, the pool's environment, and `worker` / `--workers` input errors.
The stub objectives here never train; test_install.py and test_parallel.py (service tests) run real
`lorasweep` worker processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from lorasweep.search import RunOptions, _workers, load_sweep, run_sweep
from lorasweep.search._workers import holds_slot, run_pool, work, worker_env
from lorasweep.search.cli import main
from lorasweep.search.record import WORKER as WORKER_ATTR
from lorasweep.search.recovery import Recovery, worker_id
from lorasweep.search.tracking import Tracker

from .test_resilience import GRID, _client, curve_runner

FORK = multiprocessing.get_context("fork")  # the children use Optuna only: no MLflow, no torch


def _journal(path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(path)))


def test_a_trial_holds_a_slot_when_the_finished_and_those_ahead_of_it_leave_one():
    study = optuna.create_study()
    for value in (1.0, 2.0):
        study.add_trial(optuna.trial.create_trial(value=value))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))  # number 2: holds nothing
    study.enqueue_trial({})  # number 3, WAITING: ahead of every later trial
    trials = study.get_trials(deepcopy=False)

    assert holds_slot(trials, number=4, budget=4)  # 2 finished + trial 3 ahead = 3 < 4
    assert not holds_slot(trials, number=4, budget=3)
    assert holds_slot(trials, number=3, budget=3)  # nothing unfinished ahead of trial 3 itself
    assert not holds_slot(trials, number=3, budget=2)  # the finished trials fill the budget


def _race(path: str, budget: int, start=None, victim: bool = False) -> None:
    """A worker process: the real loop and recovery, a stub trial (a quarter of them fail). `start`,
    a barrier, lets all workers look at the study at the same moment: each sees free slots."""
    _workers.POLL_S = 0.1
    study = optuna.load_study(
        study_name="race", storage=_journal(path), sampler=optuna.samplers.RandomSampler()
    )

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, worker_id())
        x = trial.suggest_float("x", 0, 1)
        time.sleep(600 if victim else 0.05)
        if x < 0.25:
            raise ValueError("an unlucky x")
        return x

    if start is not None:
        start.wait()
    # No trial has an MLflow run here, so recovery never reaches for the tracker.
    work(study, objective, lambda: budget, recover=Recovery(None, retries=1).fail_dead)


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


@pytest.mark.parametrize("budget", [1, 2, 3, 6])
def test_four_processes_finish_exactly_the_budget(tmp_path, budget):
    path = tmp_path / "race.journal"
    optuna.create_study(study_name="race", storage=_journal(path))
    start = FORK.Barrier(4)
    workers = [FORK.Process(target=_race, args=(str(path), budget, start)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0

    study = optuna.load_study(study_name="race", storage=_journal(path))
    assert len(_finished(study)) == budget
    states = {t.state for t in study.trials}
    assert TrialState.RUNNING not in states
    # A trial that lost the race for a slot went back to the queue untouched.
    assert all(not t.params for t in study.trials if t.state == TrialState.WAITING)


def test_a_waiting_worker_takes_over_the_slot_of_a_killed_workers_trial(tmp_path):
    path = tmp_path / "race.journal"
    optuna.create_study(study_name="race", storage=_journal(path))
    victim = FORK.Process(target=_race, args=(str(path), 3, None, True))
    victim.start()
    study = optuna.load_study(study_name="race", storage=_journal(path))
    deadline = time.monotonic() + 60
    while not any(t.params for t in study.get_trials(states=(TrialState.RUNNING,))):
        assert time.monotonic() < deadline, "the victim never started its trial"
        time.sleep(0.1)
    survivor = FORK.Process(target=_race, args=(str(path), 3))
    survivor.start()
    # The survivor finishes two trials, then waits for the victim's: the last slot is held.
    while len(_finished(study)) < 2:
        assert time.monotonic() < deadline and survivor.is_alive(), "the survivor never finished two trials"
        time.sleep(0.1)
    time.sleep(0.5)
    assert survivor.is_alive()
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    survivor.join(timeout=60)
    assert survivor.exitcode == 0

    trials = study.get_trials()
    killed = trials[0]
    assert killed.state == TrialState.FAIL and killed.user_attrs["error"] == "worker died mid-trial"
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 0)
    assert retry.params == killed.params and retry.state != TrialState.WAITING
    assert len(_finished(study)) == 3


def test_workers_get_the_stores_urls_through_their_environment_not_their_command_line(monkeypatch):
    """A command line is visible to everyone on the machine (ps); a process's environment is not."""
    started = []

    class Exited:  # a worker process that has already finished
        returncode = 0

        def __init__(self, command, env, **kwargs):
            started.append((command, env))

        def poll(self):
            return 0

    monkeypatch.setattr(_workers.subprocess, "Popen", Exited)
    storage, uri = "postgresql://u:hunter2@db/optuna", "http://u:hunter2@mlflow:5000"
    study = optuna.create_study(study_name="s")
    run_pool(study, 2, storage=storage, tracking_uri=uri, max_failures=1, on_trial=print, stop=lambda: False)
    assert len(started) == 2
    for command, env in started:
        assert "hunter2" not in " ".join(command) and command[-4:-2] == ["--study", "s"]
        assert env["LORASWEEP_STORAGE"] == storage and env["MLFLOW_TRACKING_URI"] == uri


def test_lorasweep_storage_in_the_environment_names_the_storage(in_tmp, monkeypatch, capsys):
    optuna.create_study(study_name="elsewhere", storage=_journal(in_tmp / "other.journal"))
    monkeypatch.setenv("LORASWEEP_STORAGE", str(in_tmp / "other.journal"))
    assert main(["trials", "--json"]) == 0  # no --storage: the one study of $LORASWEEP_STORAGE
    assert json.loads(capsys.readouterr().out) == []
    assert main(["trials", "--storage", "missing.journal"]) == 2  # the flag still wins


def test_local_workers_share_the_cores_and_take_a_gpu_each(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(5)))
    env = {"CUDA_VISIBLE_DEVICES": "2,3"}
    threads = [worker_env(i, 2, env)["OMP_NUM_THREADS"] for i in range(2)]
    assert threads == ["3", "2"]
    assert [worker_env(i, 3, env)["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["2", "3", "2"]
    assert worker_env(0, 8, {"CUDA_VISIBLE_DEVICES": "0"})["OMP_NUM_THREADS"] == "1"
    assert worker_env(0, 2, {"CUDA_VISIBLE_DEVICES": "0"})["CUDA_VISIBLE_DEVICES"] == "0"  # one GPU: shared


def _stored_study(folder, **attrs) -> None:
    study = optuna.create_study(study_name="joined", storage=_journal(folder / "mlruns" / "optuna.journal"))
    for key, value in attrs.items():
        study.set_user_attr(key, value)


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["worker"], "the study storage must exist, but got storage='mlruns/optuna.journal'"),
        ({}, ["worker", "--study", "other"], "the study must exist in the storage, but got study='other'"),
        ({}, ["worker"], "a study to resume or join must have been started by lorasweep"),
        (
            {
                "sweep_yaml": "study: {name: joined}\n",
                "tracking_uri": "postgresql://u:***@db/mlflow",
                "mlflow_parent_run_id": "abc",
            },
            ["worker"],
            (
                "the tracking URI must carry its credentials, but study 'joined' stores "
                "postgresql://u:***@db/mlflow (masked). Pass --tracking-uri"
            ),
        ),
        (
            {"sweep_yaml": "study: {name: joined}\n"},
            ["worker"],
            (
                "a study to join must have its MLflow parent run, but study 'joined' has none yet. Start it "
                "with lorasweep run FILE --study joined"
            ),
        ),
        (
            None,
            ["worker", "--storage", "postgresql://u:secret@127.0.0.1:1/optuna"],
            (
                "the study storage must be a database this machine can open, but got "
                "storage=postgresql://u:***@127.0.0.1:1/optuna: connection failed"
            ),
        ),
        (None, ["worker", "--max-failures", "0"], "--max-failures must be a positive integer"),
        (
            None,
            ["run", "sweep.yaml", "--workers", "0"],
            "--workers must be a positive integer, but got workers=0.",
        ),
        (
            None,
            ["run", "sweep.yaml", "--workers", "2", "--storage", "sqlite:///optuna.db"],
            (
                "--workers above 1 needs a study storage that several processes can write at once, but got "
                "storage=sqlite:///optuna.db"
            ),
        ),
    ],
    ids=[
        "no storage",
        "no such study",
        "not lorasweep's",
        "masked password",
        "no parent run",
        "database down",
        "max failures",
        "zero",
        "sqlite",
    ],
)
def test_bad_worker_input_exits_2_with_one_message(in_tmp, capsys, setup, args, message):
    (in_tmp / "sweep.yaml").write_text("study: {name: joined}\n", encoding="utf-8")
    if setup is not None:
        (in_tmp / "mlruns").mkdir()
        _stored_study(in_tmp, **setup)
    before = sorted(p.name for p in in_tmp.rglob("*"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in in_tmp.rglob("*")) == before  # nothing written


def test_a_study_that_workers_finished_gets_its_parent_run_closed_on_the_next_run(stores, write):
    """The run that started the study was stopped while workers finished the budget: the next run
    or resume finds nothing to run, and closes the parent run with the summary."""
    sweep = load_sweep(write(GRID.format(metric="f1", seed=0, extra="")))
    options = RunOptions(quiet=True, plots=False)
    study = run_sweep(sweep, options, runner=curve_runner())
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    Tracker("sqlite:///mlruns/mlflow.db", "stub").fail_study(parent_id, "KILLED")

    run_sweep(sweep, options, runner=curve_runner())
    parent = _client(stores).get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_complete"] == 3


# A pool as run_pool starts one: its worker gets worker_env's environment.
_POOL = """\
import subprocess, sys, time
from lorasweep.search._workers import worker_env
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=worker_env(0, 1))
print(worker.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_pool_worker_dies_with_its_pool_even_by_sigkill(tmp_path, monkeypatch):
    """SIGKILL of `lorasweep run --workers N` leaves the pool no chance to stop its workers: each
    worker must go by itself (the pool's trials are then recovered as any dead worker's)."""
    monkeypatch.setattr(_workers, "POLL_S", 0.1)
    worker_code = (
        "import time; from lorasweep.search import _workers; _workers.die_with_pool(); "
        "print('ready', flush=True); time.sleep(120)"
    )
    pool = subprocess.Popen(
        [sys.executable, "-c", _POOL, worker_code], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    worker = int(pool.stdout.readline())
    try:
        assert _wait_until(lambda: _alive(worker), 30), "the worker never started"
        time.sleep(3)  # past its start: it runs trials now
        assert _alive(worker)
        os.kill(pool.pid, signal.SIGKILL)
        pool.wait()
        assert _wait_until(lambda: not _alive(worker), 10), "the worker outlived its pool"
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl")
def test_a_pool_worker_whose_pool_is_already_gone_stops_at_once(tmp_path):
    """The pool may die before the worker asks to die with it: the worker checks right after."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    env = {**os.environ, _workers.POOL_ENV: str(gone.pid)}
    code = "from lorasweep.search import _workers; _workers.die_with_pool(); import time; time.sleep(60)"
    worker = subprocess.run([sys.executable, "-c", code], check=False, env=env, timeout=60, cwd=tmp_path)
    assert worker.returncode == -signal.SIGKILL


def test_a_worker_started_by_hand_is_left_alone():
    _workers.die_with_pool({})  # no pool: nothing to die with (and nothing raised)
