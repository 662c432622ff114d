"""When things go wrong: each fault of docs/failures.md's table, done to a real sweep as it would happen
to a user, then the same command run again; what was lost, what was left RUNNING, what was shown.

    .venv/bin/python benchmarks/faults.py [WORD ...]      (or: make bench-faults; about 15 min on 2 cores)

Each case runs the `lorasweep` command in a scratch folder (with a TMPDIR of its own) on a
127k-parameter Llama (the 0.1-study fixture's base: trials of a second or two), makes the fault
happen (a kill, a file cut, removed or altered, a full disk, a server gone, an input that is a path
or a link), then runs the command again. The table says, after that rerun:
- lost: finished trials of before the fault that the study no longer has, or whose MLflow run is
  gone or not FINISHED;
- left RUNNING: Optuna trials in RUNNING and MLflow runs in RUNNING (a stuck trial or parent run),
  deleted runs included;
- shown: the first line the faulted command (or the rerun, where the fault is found then) printed
  to stderr, and its exit code;
- the last column: what the same command did again, or what the stores and folders hold.
The two promote kills kill the process at one exact step (os._exit right after an MLflow call: a
kill -9 there); the full disk is a 40 MB tmpfs (needs root to mount; skipped otherwise). The cases
of the hand-over, of a study's life and of its inputs are in _faults_handover.py,
_faults_lifecycle.py and _faults_inputs.py; what they all stand on, in _faults_harness.py.
WORD picks the cases whose function name holds it, in the order given (e.g. `faults.py disk promote`).
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path

import _faults_handover as handover
import _faults_inputs as inputs
import _faults_lifecycle as lifecycle
from _faults_harness import FP32, STUDY, Row, finished, lorasweep, lost, rerun, running, spawn, start, sweep

FREE_KB = 48  # what the full disk leaves: a trial's run opens, its adapter and metrics do not fit


# -- the stores and kills ------------------------------------------------------------------------
def continued(folder: Path) -> Row:
    before = start(folder, 3)
    done, after = rerun(folder, 6)
    notes = lorasweep(folder, "trials").out
    reused = sum("same configuration" in line for line in notes)
    return Row(
        "budget raised 3 -> 6 (the study continued)",
        done.first(),
        lost(folder, before),
        running(folder),
        f"{after}; {reused} of them a configuration already tried",
    )


def journal_cut(folder: Path) -> Row:
    before = start(folder, 2)
    journal = folder / "mlruns" / "optuna.journal"
    journal.write_bytes(journal.read_bytes()[:-7])  # a kill or a full disk mid-record
    done, after = rerun(folder, 3)
    readable = lorasweep(folder, "trials").code == 0
    return Row(
        "journal cut 7 bytes short (a write killed mid-record)",
        done.first(),
        lost(folder, before),
        running(folder),
        f"{after}; trials readable: {readable}",
    )


def mlflow_db_deleted(folder: Path) -> Row:
    before = start(folder, 2)
    (folder / "mlruns" / "mlflow.db").unlink()
    done, after = rerun(folder, 3)
    return Row("mlflow.db deleted", done.first(), lost(folder, before), running(folder), after)


def mlflow_db_corrupted(folder: Path) -> Row:
    before = start(folder, 2)
    db = folder / "mlruns" / "mlflow.db"
    with db.open("r+b") as f:
        f.write(b"this is not a database" * 8)
    done, _ = rerun(folder, 3)
    db.rename(db.with_suffix(".corrupt"))  # the user's fix: put it aside (or restore a backup)
    _, after = rerun(folder, 3)
    return Row(
        "mlflow.db corrupted",
        done.first(),
        lost(folder, before),
        running(folder),
        f"put aside, then {after}",
    )


def journal_deleted(folder: Path) -> Row:
    start(folder, 2)
    (folder / "mlruns" / "optuna.journal").unlink()
    done, after = rerun(folder, 2)
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("lorasweep.role") == "study"]
    per_parent = max(
        sum(
            r.data.tags.get("mlflow.parentRunId") == p.info.run_id and r.info.run_name == "trial-0"
            for r in runs
        )
        for p in parents
    )
    return Row(
        "optuna.journal deleted (the study is gone; its MLflow runs stay)",
        done.first(),
        "the study (by the fault itself)",
        running(folder),
        f"{after} in a new study; {len(parents)} parent runs, at most {per_parent} trial-0 under one",
    )


def fresh_stores_at_once(folder: Path) -> Row:
    (folder / "s.yaml").write_text(sweep(2), encoding="utf-8")
    both = [spawn(folder, "-q", "run", "s.yaml") for _ in range(2)]
    codes = [p.wait(timeout=1200) for p in both]
    errors = [line for p in both for line in p.stderr.read().splitlines() if line.strip()]
    shown = f"exits {codes}" + (f': "{errors[0][:150]}"' if errors else "")
    return Row(
        "two `run` of one study started at once on fresh stores",
        shown,
        "none",
        running(folder),
        f"{len(finished(folder))}/2 finished between them",
    )


def pool_killed(folder: Path) -> Row:
    import psutil

    (folder / "s.yaml").write_text(sweep(12), encoding="utf-8")
    pool = spawn(folder, "-q", "run", "s.yaml", "--workers", "2")
    deadline = time.monotonic() + 300
    before: dict[int, str] = {}
    while time.monotonic() < deadline:  # until a trial has finished and another runs
        time.sleep(1)
        before = finished(folder)
        if before:
            break
    workers = [c.pid for c in psutil.Process(pool.pid).children(recursive=True)]
    pool.kill()
    pool.wait()
    time.sleep(10)
    alive = [pid for pid in workers if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    for pid in alive:  # do not leave them running whatever the verdict
        os.kill(pid, signal.SIGKILL)
    _, after = rerun(folder, 12)
    return Row(
        "SIGKILL of `run --workers 2` mid-trial",
        f"{len(alive)} of {len(workers)} workers alive 10 s later",
        lost(folder, before),
        running(folder),
        after,
    )


_DIES_AFTER = """
import os, sys
from mlflow import MlflowClient
from lorasweep.search.cli import main
call = getattr(MlflowClient, sys.argv[1])
def then_die(self, *args, **kwargs):
    call(self, *args, **kwargs)
    os._exit(9)
setattr(MlflowClient, sys.argv[1], then_die)
sys.exit(main(["-q", "promote"]))
"""


def promote_killed(step: str) -> Callable[[Path], Row]:
    def promote(folder: Path) -> Row:
        from mlflow import MlflowClient

        start(folder, 2, sweep(2, more=FP32))  # fp32 alone: the kill comes after the exports
        killed = lorasweep(folder, step, script=_DIES_AFTER)
        done = lorasweep(folder, "promote")
        client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
        versions = client.search_model_versions(f"name = '{STUDY}'")
        experiments = [e.experiment_id for e in client.search_experiments()]
        pending = sum(m.status.name == "PENDING" for m in client.search_logged_models(experiments))
        champion = client.get_model_version_by_alias(STUDY, "champion").version if done.code == 0 else "-"
        scratch = list(Path(tempfile.gettempdir()).glob("lorasweep-promote-*")) + list(
            (folder / "exports").glob(f"{STUDY}/.*")
        )
        return Row(
            f"`promote` killed right after MLflow's {step}",
            f"kill: exit {killed.code}; rerun: {done.first()}",
            "-",
            f"{pending} logged models PENDING",
            f"{len(versions)} version(s), champion v{champion}, {len(scratch)} scratch folders left",
        )

    return promote


def disk_full(folder: Path) -> Row:
    """The sweep's folder on a 40 MB tmpfs, filled but for FREE_KB once a trial has finished: room
    for the next trial to start and train, not for all it writes at its end."""
    disk = folder / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        return Row("disk full mid-sweep", "skipped: mounting a tmpfs needs root", "-", "-", "-")
    try:
        before = start(disk, 1)
        ballast = disk / "ballast"
        free = shutil.disk_usage(disk).free
        with ballast.open("wb") as f:
            f.write(b"\0" * max(0, free - FREE_KB * 1024))
        done, _ = rerun(disk, 3)
        during = running(disk)
        ballast.unlink()
        _, after = rerun(disk, 3)
        return Row(
            f"disk full mid-sweep ({FREE_KB} kB left)",
            done.first(),
            lost(disk, before),
            f"{during} until the rerun; then {running(disk)}",
            f"space freed, then {after}",
        )
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


CASES: list[Callable[[Path], Row | list[Row]]] = [
    continued,
    journal_cut,
    disk_full,
    mlflow_db_deleted,
    mlflow_db_corrupted,
    journal_deleted,
    fresh_stores_at_once,
    promote_killed("create_model_version"),
    promote_killed("create_logged_model"),
    pool_killed,
    # the hand-over
    handover.adapter_altered,
    handover.promotes,  # at once; a second study to the same model name; mlruns removed under exports
    handover.phi_export,
    # a study's life
    lifecycle.delete_after_journal_moved,
    lifecycle.delete_while_training,
    lifecycle.too_many_workers,
    lifecycle.timeout_mid_trial,  # and n_trials 1e6 with a timeout
    lifecycle.space_changed,
    lifecycle.sigint_thrice,
    # what a sweep is given, and where it lives
    inputs.project_moved,
    inputs.experiment_paths,
    inputs.study_name_300,
    inputs.data_links_to_secrets,
    inputs.sweep_file_not_a_file,
    inputs.tracking_server_down,
    inputs.knobs_cache_emptied,
]


def main() -> int:
    """Each row is printed as its case ends (a run cut short still leaves the rows it made)."""
    chosen = sys.argv[1:]  # words of the cases to run (e.g. disk promote); all by default
    began = time.monotonic()
    print("| fault | shown | finished trials lost | left RUNNING | the same command again, or what is left |")
    print("| --- | --- | --- | --- | --- |", flush=True)
    picked = [c for word in chosen for c in CASES if word in c.__name__] if chosen else CASES
    for case in dict.fromkeys(picked):  # in the order of the words given, each case once
        with tempfile.TemporaryDirectory(prefix="lorasweep-faults-") as scratch:
            (Path(scratch) / "tmp").mkdir()
            tmp = os.environ.get("TMPDIR"), tempfile.tempdir
            os.environ["TMPDIR"] = tempfile.tempdir = str(Path(scratch) / "tmp")  # its scratch folders, apart
            (Path(scratch) / "case").mkdir()
            started = time.monotonic()
            try:
                done = case(Path(scratch) / "case")
            finally:
                if tmp[0] is None:
                    os.environ.pop("TMPDIR")
                else:
                    os.environ["TMPDIR"] = tmp[0]
                tempfile.tempdir = tmp[1]
            seconds = time.monotonic() - started
            for row in done if isinstance(done, list) else [done]:
                row = Row(*(str(f).replace(str(Path(scratch) / "case"), "...") for f in astuple(row)))
                print(f"| {row.case} | {row.shown} | {row.lost} | {row.running} | {row.after} |", flush=True)
                print(f"done: {row.case} ({seconds:.0f} s)", file=sys.stderr, flush=True)
    machine = platform.processor() or platform.machine()
    print(f"\n{os.cpu_count()} CPUs ({machine}), {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
