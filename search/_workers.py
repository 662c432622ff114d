"""Several workers on one study: the exact trial budget, the loop every worker runs, and the local
pool of worker processes behind `lorasweep run --workers N`.

The budget counts finished (complete or pruned) trials. With several workers a check between trials
is not enough: two workers that each see one slot left would both start a trial. So a trial, once
Optuna has created it (or popped it from the queue of WAITING trials), first takes a slot:

    trial n holds a slot  <=>  finished + (trials numbered below n that are RUNNING or WAITING) < budget

Optuna numbers trials in the order it creates them, atomically in every storage. A trial without a
slot goes back to the queue (WAITING) before it has sampled anything or opened an MLflow run. Then no
more than `budget` trials ever finish: take the one with the highest number. When it took its slot,
every other trial that was to finish already existed (its number is lower) and was WAITING, RUNNING
or finished, so each was counted, and there were fewer than `budget` of them.

A worker that finds every slot held by running trials waits rather than stops: a running trial may
still fail (its slot frees up) or lose its worker (it is failed and queued again, see _recovery). It
stops once the study holds its budget of finished trials.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lorasweep.objectives import TrialTimedOut

from .storage import require_stored
from .urls import STORAGE_ENV

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ENDED = (*FINISHED, TrialState.FAIL)
POLL_S = 2.0  # how often a waiting worker, or the pool, looks at the study again
STOP_GRACE_S = 60  # how long a worker may take to close its trial after SIGTERM
POOL_ENV = "LORASWEEP_POOL_PID"  # set on a pool's workers: the process id of the pool
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class _NoSlot(BaseException):
    """Raised from the objective when its trial holds no slot. A BaseException, not an Exception:
    Study.optimize then lets it through without telling the trial a state, and the trial stays
    WAITING, as it was put back."""


def holds_slot(trials: Sequence[FrozenTrial], number: int, budget: int) -> bool:
    """Whether trial `number` may run: the finished trials and those queued or running ahead of it
    leave a slot of the budget. (The rule and why it is exact: the module's docstring.)"""
    finished = sum(t.state in FINISHED for t in trials)
    ahead = sum(t.number < number and t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    return finished + ahead < budget


def work(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    budget: Callable[[], int],
    *,
    callbacks: Iterable[Callable[[optuna.Study, FrozenTrial], None]] = (),
    recover: Callable[[optuna.Study], object] = lambda study: None,
    stop: Callable[[], bool] = lambda: False,
    deadline: float | None = None,
    log: Callable[[str], None] | None = None,
) -> str:
    """Run trials of `study` until it holds `budget()` finished trials (read again before each
    trial: `lorasweep run --trials` may raise it meanwhile), `stop()` says so, the space is
    exhausted (every configuration finished or running) or the `deadline` (a time.monotonic()
    reading: the study's timeout) passes, between trials or during one (the trial side stops it:
    TrialTimedOut). Each trial is one Study.optimize call, so Optuna's heartbeat, catch and
    callbacks work as usual; `recover` fails the trials of dead workers before each one. Returns why
    it ended: "budget", "exhausted", "timeout" or "stopped"."""
    waiting_for: set[int] = set()

    def gated(trial: optuna.Trial) -> Any:
        if not holds_slot(study.get_trials(deepcopy=False), trial.number, budget()):
            study._storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
            raise _NoSlot
        return objective(trial)

    while not stop():
        require_stored(study)  # deleted under the sweep (delete --force): said in one line
        recover(study)
        with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # other machines' dead workers (database storages)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED for t in trials)
        running = {t.number for t in trials if t.state == TrialState.RUNNING}
        if finished >= budget():
            return "budget"
        if exhausted(study):
            return "exhausted"
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"
        if finished + len(running) >= budget():
            if log is not None and running != waiting_for:
                log(f"waiting: the budget's last slots are held by running trial(s) {_numbers(running)}")
            waiting_for = running
            time.sleep(POLL_S)
            continue
        try:
            study.optimize(gated, n_trials=1, catch=(Exception,), callbacks=list(callbacks))
        except _NoSlot:  # another worker took the last slot first
            time.sleep(POLL_S)
        except TrialTimedOut:  # the trial is FAIL and marked interrupted: a rerun runs it again
            return "timeout"
    return "stopped"


def exhausted(study: optuna.Study) -> bool:
    """Whether the study's sampler has no configuration left to try (GridSampler, _fresh's
    FreshSampler). The grid sampler stops optimize itself when its grid is done; one optimize call
    per trial means asking it here as well."""
    is_exhausted = getattr(study.sampler, "is_exhausted", None)
    return is_exhausted is not None and is_exhausted(study)


def _numbers(numbers: Iterable[int]) -> str:
    return ", ".join(map(str, sorted(numbers)))


# -- the local pool: `lorasweep run --workers N` ---------------------------------------------------
@dataclass
class _Process:
    index: int
    process: subprocess.Popen
    log: IO[str]  # its stderr, read back when it fails

    def tail(self, lines: int = 3) -> str:
        self.log.seek(0)
        return " | ".join(self.log.read().strip().splitlines()[-lines:]) or "no output"


def worker_env(index: int, workers: int, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment of local worker `index` of `workers`: the cores divided between them (torch
    reads OMP_NUM_THREADS when it starts), a GPU of its own where several are visible, and the pool's
    process id."""
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // workers + (index < cores % workers))
    child = {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    child[POOL_ENV] = str(os.getpid())  # the worker ends with this process: die_with_pool
    gpus = _visible_gpus(env)
    if len(gpus) > 1:
        child["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    return child


def _visible_gpus(env: Mapping[str, str]) -> list[str]:
    if "CUDA_VISIBLE_DEVICES" in env:
        return [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    import torch  # already loaded by the run that spawns the pool

    return [str(i) for i in range(torch.cuda.device_count())]


def run_pool(
    study: optuna.Study,
    workers: int,
    *,
    storage: str,
    tracking_uri: str,
    max_failures: int,
    on_trial: Callable[[FrozenTrial], None],
    stop: Callable[[], bool],
    system_metrics: bool = True,
) -> list[str]:
    """Run `workers` local `lorasweep worker` processes on `study` until they all exit. Each trial
    that ends is handed to `on_trial` as the pool sees it; once `stop()` says so, or on Ctrl-C or
    SIGTERM, each worker is sent SIGTERM and closes its trial as a single run would. Returns what
    went wrong with workers that exited abnormally (none when all ended normally)."""
    # -P: the current folder does not go first on sys.path, so a user's own lorasweep/ (or any
    # package of that name) in the folder the sweep runs from cannot stand in for ours.
    command = [sys.executable, "-P", "-m", "lorasweep.search", "-q", "worker", "--study", study.study_name]
    command += ["--max-failures", str(max_failures)] + ([] if system_metrics else ["--no-system-metrics"])
    # The stores' URLs go through the environment, which only this user can read: they may hold a
    # password, and a command line is visible to everyone on the machine (ps).
    stores = {STORAGE_ENV: storage, "MLFLOW_TRACKING_URI": tracking_uri}
    seen = {t.number for t in study.get_trials(deepcopy=False, states=ENDED)}
    pool: list[_Process] = []
    try:
        for index in range(workers):
            log = tempfile.TemporaryFile("w+")  # closed in finally
            # A session of its own: Ctrl-C reaches the pool, which stops each worker once, rather
            # than a second signal landing in a worker that is closing its trial. Started from the
            # main thread: a worker's PR_SET_PDEATHSIG (die_with_pool) fires when this thread ends.
            process = subprocess.Popen(
                command,
                env={**worker_env(index, workers), **stores},
                stdout=subprocess.DEVNULL,
                stderr=log,
                text=True,
                start_new_session=True,
            )
            pool.append(_Process(index, process, log))
        while any(p.process.poll() is None for p in pool):
            _hand_on_ended(study, seen, on_trial)
            if stop():
                _terminate(pool)
                break
            time.sleep(POLL_S / 2)
        _hand_on_ended(study, seen, on_trial)
        return [
            f"worker {p.index} exited with code {p.process.returncode}: {p.tail()}"
            for p in pool
            if p.process.returncode not in (0, None) and not stop()
        ]
    except BaseException:
        _terminate(pool)
        raise
    finally:
        for p in pool:
            p.log.close()


def die_with_pool(env: Mapping[str, str] = os.environ) -> None:
    """In a worker of `run --workers N`: die when the pool process dies. The pool stops its workers
    itself when it can; a SIGKILL leaves it no chance, and they ran on, orphaned, until the budget
    was met. A worker started by hand (no POOL_ENV) is left alone.

    The kernel sends SIGKILL (Linux's PR_SET_PDEATHSIG; the pool itself is Linux-only, see
    worker_env), and the trial is then recovered as any dead worker's on the next run (_recovery).
    Not SIGTERM: turned into KeyboardInterrupt, it is swallowed ("Exception ignored") when it lands
    in a finalizer or weakref callback, and nothing would stop the orphan then. The parent is
    checked once after asking: it may have died before."""
    pool = env.get(POOL_ENV)
    if not pool or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(pool):
        os.kill(os.getpid(), signal.SIGKILL)


def _hand_on_ended(study: optuna.Study, seen: set[int], on_trial: Callable[[FrozenTrial], None]) -> None:
    """Each trial that ended since the last look, to `on_trial` once."""
    for trial in study.get_trials(deepcopy=False, states=ENDED):
        if trial.number not in seen:
            seen.add(trial.number)
            on_trial(trial)


def _terminate(pool: list[_Process]) -> None:
    """SIGTERM to each worker still running (it closes its trial's MLflow run KILLED and queues the
    trial to run again), SIGKILL to any that has not exited STOP_GRACE_S later."""
    for p in pool:
        if p.process.poll() is None:
            p.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in pool:
        try:
            p.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.process.kill()
            p.process.wait()
