"""What every case of benchmarks/faults.py stands on: the sweep it runs, the `lorasweep` command as a
user runs it, and what the two stores hold afterwards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
MICRO_BASE = ROOT / "tests" / "fixtures" / "study_0_1" / "base"
STUDY = "faults"

TONE = (
    'path: builtin:tone, train_split: "train[:200]", prompt_template: "Phrase: {phrase}\\nTone:",\n'
    '       response_template: " {tone}", label_column: tone'
)
TRAIN = "max_steps: 6, eval_steps: 3, logging_steps: 3, per_device_train_batch_size: 8"
SPACE = """\
  learning_rate: {type: float, low: 1e-4, high: 1e-1, log: true}
  lora_r: {type: choice, values: [2, 4, 8]}
"""
HEADER = "error: the sweep cannot run:"
MESSAGE = re.compile(r"\b(warning|error|note):")
FP32 = "promote: {precisions: [fp32]}\n"  # what promote exports and gates: fp32 alone is the cheapest


def sweep(
    trials: int,
    *,
    study: str = "",  # more keys of `study`, e.g. ", timeout: 10"
    train: str = TRAIN,
    space: str = SPACE,
    data: str = TONE,
    base: Path | str = MICRO_BASE,
    more: str = "",  # more sections, e.g. FP32
) -> str:
    return f"""\
study: {{name: {STUDY}, metric: f1, n_trials: {trials}, sampler: {{type: tpe, seed: 0}}{study}}}
model: {{base: {base}}}
data: {{{data}}}
train: {{{train}}}
eval: {{max_samples: 8, max_new_tokens: 3}}
search_space:
{space}{more}"""


@dataclass
class Done:
    code: int
    err: list[str]
    out: list[str]

    @property
    def printed(self) -> list[str]:
        """stderr's lines but the progress bar's (`sweep: ...`, each redraw a line of its own) and the
        header over a sweep file's problems (one line each follows it). A message written onto the
        bar's line (no newline before it) is kept, from its `warning:`, `error:` or `note:` on."""
        kept = []
        for line in self.err:
            glued = MESSAGE.search(line) if line.startswith("sweep:") else None
            if glued:
                kept.append(line[glued.start() :])
            elif line.strip() and not line.startswith(("sweep:", HEADER)):
                kept.append(line)
        return kept

    @property
    def glued(self) -> int:
        """Messages written onto the progress bar's line."""
        return sum(bool(line.startswith("sweep:") and MESSAGE.search(line)) for line in self.err)

    @property
    def shown(self) -> list[str]:
        """What the user reads as messages: stdout's warnings and notes, then stderr's lines."""
        said = [line for line in self.out if line.startswith(("warning:", "note:"))]
        return said + [line for line in self.printed if not line.startswith(("[", " "))]

    @property
    def traceback(self) -> bool:
        return any(line.startswith("Traceback") for line in self.err)

    def exit(self) -> str:
        return f"exit {self.code}" + (" (a traceback)" if self.traceback else "")

    def first(self) -> str:
        lines = self.shown
        printed = len(self.printed)
        said = f"exit {self.code}, {printed} line{'' if printed == 1 else 's'} on stderr"
        said += " (a traceback)" if self.traceback else ""
        return said + (f': "{cut(lines[0])}"' if lines else "")


def cut(line: str, most: int = 200) -> str:
    """A line for a table cell: the case's scratch folder (the parent of its TMPDIR) shown as ...,
    at most `most` characters."""
    scratch = Path(os.environ.get("TMPDIR", "/")).parent
    if scratch.name.startswith("lorasweep-faults-"):
        line = line.replace(str(scratch / "case"), "...")
    line = line.replace("|", "\\|")
    return line if len(line) <= most else line[:most] + "..."


def lorasweep(
    folder: Path, *args: str, script: str | None = None, env: dict | None = None, timeout: float = 1200
) -> Done:
    """The command in `folder`, to its end (a TimeoutExpired after `timeout` seconds: it is killed)."""
    command = [sys.executable, "-P"] + (["-c", script] if script else ["-m", "lorasweep.search"]) + list(args)
    done = subprocess.run(
        command,
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return Done(done.returncode, done.stderr.splitlines(), done.stdout.splitlines())


def many(calls: list[tuple[Path, tuple[str, ...]]], at_once: int = 2, timeout: float = 1200) -> list:
    """Commands (folder, args), `at_once` at a time; None for one still running after `timeout` s."""
    from concurrent.futures import ThreadPoolExecutor

    def one(call: tuple[Path, tuple[str, ...]]) -> Done | None:
        try:
            return lorasweep(call[0], *call[1], timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    with ThreadPoolExecutor(at_once) as pool:
        return list(pool.map(one, calls))


def spawn(folder: Path, *args: str, out: bool = False, group: bool = False) -> subprocess.Popen:
    """The command in `folder`, started and left running; stdout kept where `out` (read it with
    `ended`), stderr always; in a process group of its own where `group` (as a terminal's foreground
    job is: a Ctrl-C there is a SIGINT to the whole group, the command's workers too)."""
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "lorasweep.search", *args],
        cwd=folder,
        stdout=subprocess.PIPE if out else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=group,
    )


def ended(process: subprocess.Popen, timeout: float = 600) -> Done:
    """A spawned command's end; killed (exit -9) if it is still running after `timeout` seconds."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return Done(process.returncode, (err or "").splitlines(), (out or "").splitlines())


def wait_for(what: Callable[[], object], timeout: float, every: float = 0.5) -> object:
    """`what()` once it is true, polled every `every` seconds; None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(every)
    return None


# -- what the stores hold ------------------------------------------------------------------------
def trials(folder: Path, study: str = STUDY) -> list:
    """The study's trials (empty if there is no journal or no such study)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = folder / "mlruns" / "optuna.journal"
    if not journal.exists():
        return []
    try:
        found = optuna.load_study(study_name=study, storage=JournalStorage(JournalFileBackend(str(journal))))
        return found.get_trials(deepcopy=False)
    except Exception:  # unreadable is what this reports
        return []


def finished(folder: Path, study: str = STUDY) -> dict[int, str]:
    """Trial number -> MLflow run id of the study's finished trials (empty if it cannot be read)."""
    return {
        t.number: t.user_attrs.get("mlflow_run_id")
        for t in trials(folder, study)
        if t.state.name in ("COMPLETE", "PRUNED")
    }


def running_trial(folder: Path) -> int | None:
    """The number of a trial of the study now RUNNING, if any."""
    return next((t.number for t in trials(folder) if t.state.name == "RUNNING"), None)


def client(folder: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")


def runs(folder: Path) -> list:
    """Every MLflow run of the store, deleted ones too."""
    from mlflow.entities import ViewType

    if not (folder / "mlruns" / "mlflow.db").exists():
        return []
    mlflow = client(folder)
    experiments = [e.experiment_id for e in mlflow.search_experiments(view_type=ViewType.ALL)]
    return mlflow.search_runs(experiments, run_view_type=ViewType.ALL) if experiments else []


def running(folder: Path) -> str:
    """Optuna trials and MLflow runs (deleted ones too) left RUNNING."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    trials_left = 0
    journal = folder / "mlruns" / "optuna.journal"
    if journal.exists():
        storage = JournalStorage(JournalFileBackend(str(journal)))
        for name in optuna.get_all_study_names(storage):
            study = optuna.load_study(study_name=name, storage=storage)
            trials_left += sum(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False))
    runs_left = sum(r.info.status == "RUNNING" for r in runs(folder))
    return "none" if trials_left == runs_left == 0 else f"{trials_left} trials, {runs_left} runs"


def lost(folder: Path, before: dict[int, str]) -> str:
    """Finished trials of `before` the study no longer has, or whose run is gone or not FINISHED."""
    from mlflow.exceptions import MlflowException

    after = finished(folder)
    mlflow = client(folder)
    gone = []
    for number in before:
        try:
            ok = number in after and mlflow.get_run(after[number]).info.status == "FINISHED"
        except MlflowException:
            ok = False
        if not ok:
            gone.append(number)
    return "none" if not gone else f"trials {', '.join(map(str, gone))} of {len(before)}"


def nothing_written(folder: Path) -> bool:
    """No study and no MLflow experiment of the study's: what a refused command must leave."""
    import optuna
    from mlflow.entities import ViewType
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not (folder / "mlruns").exists():
        return True
    names, studies = set(), []
    if (folder / "mlruns" / "mlflow.db").exists():
        names = {e.name for e in client(folder).search_experiments(view_type=ViewType.ALL)} - {"Default"}
    if (folder / "mlruns" / "optuna.journal").exists():
        journal = JournalFileBackend(str(folder / "mlruns" / "optuna.journal"))
        studies = optuna.get_all_study_names(JournalStorage(journal))
    return not names and not studies


# -- the steps cases share -----------------------------------------------------------------------
@dataclass
class Row:
    case: str
    shown: str
    lost: str
    running: str
    after: str  # what the rerun did, or what the stores hold


def start(folder: Path, trials: int, text: str | None = None, *args: str) -> dict[int, str]:
    """A sweep of `trials` written to s.yaml (or `text`) and run to its end: its finished trials."""
    (folder / "s.yaml").write_text(text or sweep(trials), encoding="utf-8")
    done = lorasweep(folder, "-q", "run", "s.yaml", *args)
    assert done.code == 0, done.err[-20:]
    return finished(folder)


def rerun(folder: Path, trials: int) -> tuple[Done, str]:
    done = lorasweep(folder, "-q", "run", "s.yaml", "--trials", str(trials))
    return done, f"exit {done.code}, {len(finished(folder))}/{trials} finished"
