"""The project's one error grammar for user input.

Every problem reads "<where>: <thing> must <rule>, but got <name=value>. <fix>" and all problems
of one file are collected and raised together, so a user fixes a sweep file in one pass.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass

# Where a value sits in a sweep file: its keys from the top (strings, or whatever YAML made of a key)
# and list indexes, e.g. ("search_space", "lora_r", "values", 0).
KeyPath = tuple[object, ...]


@dataclass(frozen=True)
class Problem:
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        return f"{where}: {self.message}" if where else self.message


class UserError(Exception):
    """Bad input from the user: the CLI prints it without a traceback and exits with code 2.
    `notes` follow the problems once, however many problems they explain."""

    def __init__(self, problems: list[Problem] | str, notes: list[str] | None = None) -> None:
        self.problems = [Problem(problems)] if isinstance(problems, str) else list(problems)
        self.notes = list(notes or [])
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join([*(str(p) for p in self.problems), *self.notes])


class SweepError(UserError):
    """A sweep file that cannot run, with every problem found in it."""


class SweepStopped(Exception):
    """The sweep gave up before its budget (too many failed trials); the message summarises why.
    Finished trials are kept, and the same command continues the study."""


class ExportFailed(Exception):
    """An ONNX exporter or an Olive pass failed on a model it should handle; the message carries the
    tool's own words. Nothing is registered and no alias moves."""


class Problems:
    """Collects problems while a file is checked, then raises them all at once."""

    def __init__(
        self, file: str | None = None, lines: dict[KeyPath, int] | None = None, *, stored: bool = False
    ) -> None:
        self.file = file
        self._lines = lines or {}
        self.items: list[Problem] = []
        self.notes: dict[str, None] = {}  # said once after the problems (a list of valid names...)
        # The file was stored with a study that already ran: what an earlier version let through
        # (a key it ignored, an infinite tolerance) must not make that study unusable now.
        self.stored = stored

    def add(self, path: KeyPath, message: str) -> None:
        """Record a problem at `path` (the key path in the file; the nearest known line is used)."""
        line = None
        for end in range(len(path), -1, -1):
            if path[:end] in self._lines:
                line = self._lines[path[:end]]
                break
        problem = Problem(message, self.file, line)
        if problem not in self.items:  # one wrong value can fail several branches of a union alike
            self.items.append(problem)

    def note(self, text: str) -> None:
        self.notes[text] = None

    def raise_if_any(self) -> None:
        if self.items:
            raise SweepError(sorted(self.items, key=lambda p: p.line or 0), list(self.notes))


class StoreError(Exception):
    """The Optuna storage or the MLflow store failed under a sweep (a full disk, a permission, a
    database gone or damaged). The sweep stops at once rather than fail trial after trial; the message
    names the store, the cause and the fix, and `exit_code` is 2 where the user must change something
    (a permission, a damaged file), 1 otherwise. Finished trials are kept: the same command continues
    once the store is fixed."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# errno -> (what happened, the fix, exit code)
_OS_FAULTS = {
    errno.ENOSPC: ("the disk is full", "Free space on that disk", 1),
    errno.EDQUOT: ("the disk quota is used up", "Free space or raise the quota", 1),
    errno.EIO: ("the disk reported an I/O error", "Check the disk", 1),
    errno.EACCES: ("permission denied", "Give this user write access to it", 2),
    errno.EPERM: ("permission denied", "Give this user write access to it", 2),
    errno.EROFS: ("the file system is read-only", "Put the store on a writable disk", 2),
}
# SQLite's words (through SQLAlchemy and MLflow) -> the same
_SQLITE_FAULTS = {
    "database or disk is full": _OS_FAULTS[errno.ENOSPC],
    "disk i/o error": _OS_FAULTS[errno.EIO],
    "readonly database": ("it cannot be written (read-only, or deleted while in use)", "Check it", 2),
    "unable to open database file": ("it cannot be opened", "Check that it exists and may be written", 2),
    "no such table": ("it was deleted or replaced while in use", "Restore it, or move it aside", 2),
    "malformed": ("the database is damaged", "Restore it from a backup, or move it aside", 2),
    "file is not a database": ("it is not a database", "Restore it from a backup, or move it aside", 2),
}


def store_error(error: BaseException, store: str) -> StoreError | None:
    """`error` as a StoreError naming `store` ("the MLflow store sqlite:///...", "the study storage
    mlruns/optuna.journal"), if a store fault is what it is (also when MLflow or SQLAlchemy wrapped it);
    None for anything else."""
    if isinstance(error, StoreError):
        return error
    seen: BaseException | None = error
    while seen is not None:
        fault = None
        if isinstance(seen, OSError) and seen.errno in _OS_FAULTS:
            fault = _OS_FAULTS[seen.errno]
        else:
            text = str(seen).lower()
            fault = next((v for k, v in _SQLITE_FAULTS.items() if k in text), None)
        if fault is not None:
            what, fix, code = fault
            cause = str(seen).splitlines()[0] if str(seen) else type(seen).__name__
            return StoreError(
                f"{store} must be writable for the sweep to go on, but got {type(seen).__name__}: {cause} "
                f"({what}). {fix}, then run the same command again: finished trials are kept, and the "
                "trial that was running is recorded as failed and runs again.",
                exit_code=code,
            )
        # what the error was raised from; not its context where `raise ... from None` hid it
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return None


# What other tools (W&B Sweeps, Ray Tune, Katib, hyperopt) call the samplers and pruners lorasweep
# names after Optuna's: pointed to, so a user who brings the word finds the thing.
EQUIVALENTS = {
    "bayes": "tpe",
    "bayesian": "tpe",
    "hyperopt": "tpe",
    "bayesianoptimization": "gp",
    "gaussian_process": "gp",
    "cma": "cmaes",
    "cma_es": "cmaes",
    "nsga2": "nsgaii",
    "genetic": "nsgaii",
    "grid_search": "grid",
    "random_search": "random",
    "asha": "successive_halving",
    "sha": "successive_halving",
    "median_stopping": "median",
    "medianstopping": "median",
}


def unknown_key(what: str, key: object, valid: Iterable[str]) -> str:
    """The message '<what> must be one of ..., but got <key>.', with the lorasweep name another
    tool's word means, or the closest valid name."""
    from lorasweep.objectives import did_you_mean  # the trial side's spelling check, loaded on demand

    valid = list(valid)
    equivalent = EQUIVALENTS.get(str(key).lower().replace("-", "_"))
    hint = f" What {key!r} names elsewhere is {equivalent!r} here." if equivalent in valid else ""
    return f"{what} must be one of {', '.join(valid)}, but got {key!r}.{hint or did_you_mean(key, valid)}"
