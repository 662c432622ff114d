"""When things go wrong: each fault of the README's table, done to a real sweep as it would happen
to a user, then the same command run again; what was lost, what was left RUNNING, what was shown.

    .venv/bin/python benchmarks/faults.py      (or: make bench-faults; about 10 min on 2 cores)

Each case runs the `lorasweep` command in a scratch folder on a 127k-parameter Llama (the
0.1-study fixture's base: trials of a second or two), makes the fault happen (a kill, a file cut or
removed, a full disk), then runs the command again. The table says, after that rerun:
- lost: finished trials of before the fault that the study no longer has, or whose MLflow run is
  gone or not FINISHED;
- left RUNNING: Optuna trials in RUNNING and MLflow runs in RUNNING (a stuck trial or parent run);
- shown: the first line the faulted command (or the rerun, where the fault is found then) printed
  to stderr, and its exit code.
The two promote cases kill the process at one exact step (os._exit right after an MLflow call: a
kill -9 there); the full disk is a 40 MB tmpfs (needs root to mount; skipped otherwise).
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
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
MICRO_BASE = ROOT / "tests" / "fixtures" / "study_0_1" / "base"
STUDY = "faults"
FREE_KB = 48  # what the full disk leaves: a trial's run opens, its adapter and metrics do not fit


def sweep(trials: int) -> str:
    return f"""\
study: {{name: {STUDY}, metric: f1, n_trials: {trials}, sampler: {{type: tpe, seed: 0}}}}
model: {{base: {MICRO_BASE}}}
data: {{path: builtin:tone, train_split: "train[:200]", prompt_template: "Phrase: {{phrase}}\\nTone:",
       response_template: " {{tone}}", label_column: tone}}
train: {{max_steps: 6, eval_steps: 3, logging_steps: 3, per_device_train_batch_size: 8}}
eval: {{max_samples: 8, max_new_tokens: 3}}
search_space:
  learning_rate: {{type: float, low: 1e-4, high: 1e-1, log: true}}
  lora_r: {{type: choice, values: [2, 4, 8]}}
"""


@dataclass
class Done:
    code: int
    err: list[str]
    out: list[str]

    def first(self) -> str:
        said = [line for line in self.out if line.startswith(("warning:", "note:"))]
        lines = said + [line for line in self.err if line.strip() and not line.startswith(("[", " "))]
        printed = len([line for line in self.err if line.strip()])
        said = f"exit {self.code}, {printed} line{'' if printed == 1 else 's'} on stderr"
        return said + (f': "{lines[0][:150]}"' if lines else "")


def lorasweep(folder: Path, *args: str, script: str | None = None) -> Done:
    command = [sys.executable, "-P"] + (["-c", script] if script else ["-m", "lorasweep.search"]) + list(args)
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False, timeout=1200)
    return Done(done.returncode, done.stderr.splitlines(), done.stdout.splitlines())


def spawn(folder: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "lorasweep.search", *args],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- what the stores hold ------------------------------------------------------------------------
def finished(folder: Path) -> dict[int, str]:
    """Trial number -> MLflow run id of the study's finished trials (empty if it cannot be read)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = folder / "mlruns" / "optuna.journal"
    if not journal.exists():
        return {}
    try:
        study = optuna.load_study(study_name=STUDY, storage=JournalStorage(JournalFileBackend(str(journal))))
    except Exception:  # noqa: BLE001 - unreadable is what this reports
        return {}
    return {
        t.number: t.user_attrs.get("mlflow_run_id")
        for t in study.get_trials(deepcopy=False)
        if t.state.name in ("COMPLETE", "PRUNED")
    }


def running(folder: Path) -> str:
    """Optuna trials and MLflow runs left RUNNING."""
    import optuna
    from mlflow import MlflowClient
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    trials = runs = 0
    journal = folder / "mlruns" / "optuna.journal"
    if journal.exists():
        storage = JournalStorage(JournalFileBackend(str(journal)))
        for name in optuna.get_all_study_names(storage):
            study = optuna.load_study(study_name=name, storage=storage)
            trials += sum(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False))
    db = folder / "mlruns" / "mlflow.db"
    if db.exists():
        client = MlflowClient(f"sqlite:///{db}")
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = len(client.search_runs(experiments, "attributes.status = 'RUNNING'")) if experiments else 0
    return "none" if trials == runs == 0 else f"{trials} trials, {runs} runs"


def lost(folder: Path, before: dict[int, str]) -> str:
    """Finished trials of `before` the study no longer has, or whose run is gone or not FINISHED."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    after = finished(folder)
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    gone = []
    for number in before:
        try:
            ok = number in after and client.get_run(after[number]).info.status == "FINISHED"
        except MlflowException:
            ok = False
        if not ok:
            gone.append(number)
    return "none" if not gone else f"trials {', '.join(map(str, gone))} of {len(before)}"


# -- the cases -----------------------------------------------------------------------------------
@dataclass
class Row:
    case: str
    shown: str
    lost: str
    running: str
    after: str  # what the rerun did


def _start(folder: Path, trials: int) -> dict[int, str]:
    (folder / "s.yaml").write_text(sweep(trials), encoding="utf-8")
    done = lorasweep(folder, "-q", "run", "s.yaml")
    assert done.code == 0, done.err[-20:]
    return finished(folder)


def _rerun(folder: Path, trials: int) -> tuple[Done, str]:
    done = lorasweep(folder, "-q", "run", "s.yaml", "--trials", str(trials))
    return done, f"exit {done.code}, {len(finished(folder))}/{trials} finished"


def continued(folder: Path) -> Row:
    before = _start(folder, 3)
    done, after = _rerun(folder, 6)
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
    before = _start(folder, 2)
    journal = folder / "mlruns" / "optuna.journal"
    journal.write_bytes(journal.read_bytes()[:-7])  # a kill or a full disk mid-record
    done, after = _rerun(folder, 3)
    readable = lorasweep(folder, "trials").code == 0
    return Row(
        "journal cut 7 bytes short (a write killed mid-record)",
        done.first(),
        lost(folder, before),
        running(folder),
        f"{after}; trials readable: {readable}",
    )


def mlflow_db_deleted(folder: Path) -> Row:
    before = _start(folder, 2)
    (folder / "mlruns" / "mlflow.db").unlink()
    done, after = _rerun(folder, 3)
    return Row("mlflow.db deleted", done.first(), lost(folder, before), running(folder), after)


def mlflow_db_corrupted(folder: Path) -> Row:
    before = _start(folder, 2)
    db = folder / "mlruns" / "mlflow.db"
    with db.open("r+b") as f:
        f.write(b"this is not a database" * 8)
    done, _ = _rerun(folder, 3)
    db.rename(db.with_suffix(".corrupt"))  # the user's fix: put it aside (or restore a backup)
    _, after = _rerun(folder, 3)
    return Row(
        "mlflow.db corrupted",
        done.first(),
        lost(folder, before),
        running(folder),
        f"put aside, then {after}",
    )


def journal_deleted(folder: Path) -> Row:
    _start(folder, 2)
    (folder / "mlruns" / "optuna.journal").unlink()
    done, after = _rerun(folder, 2)
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
    _, after = _rerun(folder, 12)
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

        _start(folder, 2)
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
        before = _start(disk, 1)
        ballast = disk / "ballast"
        free = shutil.disk_usage(disk).free
        with ballast.open("wb") as f:
            f.write(b"\0" * max(0, free - FREE_KB * 1024))
        done, _ = _rerun(disk, 3)
        during = running(disk)
        ballast.unlink()
        _, after = _rerun(disk, 3)
        return Row(
            f"disk full mid-sweep ({FREE_KB} kB left)",
            done.first(),
            lost(disk, before),
            f"{during} until the rerun; then {running(disk)}",
            f"space freed, then {after}",
        )
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


CASES: list[Callable[[Path], Row]] = [
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
]


def main() -> int:
    chosen = sys.argv[1:]  # words of the cases to run (e.g. disk promote); all by default
    rows = []
    for case in CASES:
        if chosen and not any(word in case.__name__ for word in chosen):
            continue
        with tempfile.TemporaryDirectory(prefix="lorasweep-faults-") as scratch:
            started = time.monotonic()
            row = case(Path(scratch))
            rows.append((row, time.monotonic() - started))
            print(f"done: {row.case} ({rows[-1][1]:.0f} s)", file=sys.stderr, flush=True)
    print(f"\n{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})\n")
    print("| fault | shown | finished trials lost | left RUNNING | the same command again |")
    print("| --- | --- | --- | --- | --- |")
    for row, _ in rows:
        print(f"| {row.case} | {row.shown} | {row.lost} | {row.running} | {row.after} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
