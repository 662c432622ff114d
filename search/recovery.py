"""Trials whose worker stopped: who runs a trial, whether that process still lives, and what becomes
of its trial (failed, its MLflow run closed, run again).

A worker is named host:pid:start-time, so a dead worker on this machine is found by its process id
(any storage); on a database storage Optuna's heartbeat finds those of other machines.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from pathlib import Path

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from . import record
from .record import TrialRecord
from .tracking import Tracker

UNNAMED_GRACE_S = 60  # a RUNNING trial that has not named its worker this long after it started is dead


class Recovery:
    """What becomes of a trial whose worker died or was interrupted: its MLflow run is closed KILLED
    (never left RUNNING) and the trial is queued to run again with the same parameters and seed, up
    to `retries` times. Retries are recorded the way Optuna's RetryHeartbeatStaleTrialCallback does
    (system attrs failed_trial and retry_history), but without copying the user attributes: those
    hold the dead attempt's MLflow run id and error."""

    def __init__(self, tracker: Tracker, retries: int) -> None:
        self.tracker, self.retries = tracker, retries

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A stale trial, already failed (Optuna's heartbeat callback, or `recover`)."""
        run_id = TrialRecord.of(trial).run_id
        if run_id:
            self.tracker.kill_trial(run_id, "the trial's worker stopped before the trial finished")
        self._retry(study, trial)

    def recover(self, study: optuna.Study) -> list[int]:
        """When a run or worker starts: fail the trials of dead workers on this machine, queue
        interrupted trials again, and close MLflow runs left RUNNING. Returns the numbers of the
        trials failed here."""
        failed = self.fail_dead(study)
        retried = {n for t in study.get_trials(deepcopy=False) for n in record.retried_numbers(t)}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if TrialRecord.of(trial).interrupted and trial.number not in retried:
                self._retry(study, trial)
        self.tracker.close_orphan_trials(
            study.study_name,
            lambda: {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))},
            record.StudyRecord.of(study).study_id,
        )
        return failed

    def fail_dead(self, study: optuna.Study) -> list[int]:
        """Fail the RUNNING trials whose worker was a process of this machine that has exited, close
        their MLflow runs and queue them again. Several workers may look at once: the storage lets
        exactly one of them move a trial to FAIL, and only that one closes the run and retries."""
        failed = []
        unnamed_dead = not is_heartbeat_enabled(study._storage)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not _dead_here(trial, unnamed_dead):
                continue
            # Through the storage, as Optuna's own fail_stale_trials does: study.tell would run
            # the sampler's after_trial hook outside optimize (the grid sampler's study.stop raises).
            storage = study._storage
            try:
                record.died(storage, trial._trial_id)
                if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
                continue
            failed.append(trial.number)
            self(study, storage.get_trial(trial._trial_id))
        return failed

    def _retry(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if len(record.retried_numbers(trial)) + 1 > self.retries:
            return
        study.add_trial(record.retry(trial))


def live_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The RUNNING trials whose worker may still run them: all but those of a process of this
    machine that has exited, those that never named a worker and are old (no heartbeat), and those
    whose heartbeat went stale (database storages). A worker on another machine without a heartbeat
    cannot be asked, so its trial counts as live."""
    storage = study._storage
    heartbeat = is_heartbeat_enabled(storage)
    # A storage with its heartbeat enabled is a BaseHeartbeat (RDB, gRPC), which has this method.
    stale = set(storage._get_stale_trial_ids(study._study_id)) if heartbeat else set()  # type: ignore[attr-defined]
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not _dead_here(t, unnamed_dead=not heartbeat) and t._trial_id not in stale
    ]


def _dead_here(trial: FrozenTrial, unnamed_dead: bool) -> bool:
    """Whether a RUNNING trial's worker is known dead on this machine (`unnamed_dead`: a trial that
    never named its worker counts, once old, where no heartbeat would ever fail it)."""
    worker = TrialRecord.of(trial).worker
    return died_here(worker) if worker else unnamed_dead and _unnamed_and_old(trial)


def _unnamed_and_old(trial: FrozenTrial) -> bool:
    """A trial that never named its worker: killed in the milliseconds between Optuna creating it
    and the objective's first line. Without a heartbeat nothing else would ever fail it, and the
    workers waiting for the budget's last slot would wait for it forever."""
    started = trial.datetime_start
    return started is not None and (datetime.now() - started).total_seconds() > UNNAMED_GRACE_S


def worker_id() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (Linux; [] elsewhere or when gone):
    [0] is the state, [19] the start time in clock ticks since boot."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _process_start(pid: int) -> str:
    """With the pid, the start time names one process: a pid the system reused is not taken for
    a live worker."""
    stat = _proc_stat(pid)
    return stat[19] if len(stat) > 19 else ""


def died_here(worker: str | None) -> bool:
    """Whether the worker that runs a trial was a process of this machine that no longer runs.
    Workers on other machines are the heartbeat's business (database storages)."""
    if not worker or worker.count(":") < 2:
        return False
    host, pid_text, started = worker.rsplit(":", 2)
    pid = int(pid_text)
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    stat = _proc_stat(pid)
    if stat and stat[0] in ("Z", "X"):
        return True  # killed, not yet reaped by its parent
    return bool(started) and len(stat) > 19 and stat[19] != started
