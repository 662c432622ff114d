"""The Optuna storage that holds studies: which URL means which storage, opening it, and finding a
study in it. A journal file under mlruns/ by default; any database Optuna takes otherwise."""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial
from sqlalchemy.exc import SQLAlchemyError

from .errors import SweepStopped, UserError, store_error
from .urls import redact

DEFAULT_STORAGE = Path("mlruns/optuna.journal")
# Database storages beat every HEARTBEAT_S; a trial silent for GRACE_S is failed and run again.
HEARTBEAT_S, GRACE_S = 30, 90


def journal_path(url: str | None) -> Path | None:
    """The journal file a storage URL names (None: the default journal), or None for a database."""
    if url is None:
        return DEFAULT_STORAGE
    return Path(url.removeprefix("journal:///")) if url.endswith(".journal") else None


def open_storage(
    url: str | None, on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None
) -> BaseStorage | str:
    """Any Optuna storage URL; by default a journal file under mlruns/, which several processes on
    one machine can share (SQLite locks up under concurrent writers).

    Database URLs get Optuna's heartbeat, so a trial whose worker died is failed (and handed to
    `on_stale`) by whichever worker notices. A journal has no heartbeat: dead workers on this
    machine are found by process id instead (recovery.py)."""
    if url is None:
        return _journal(DEFAULT_STORAGE)
    path = journal_path(url)
    if path is not None:
        return _journal(path)
    if re.match(r"(sqlite|postgresql|mysql|oracle|mssql)(\+\w+)?://", url):
        with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return RDBStorage(
                    url,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=on_stale,
                )
            except SQLAlchemyError as e:  # a server that is down, a wrong password, no driver
                reason = str(getattr(e, "orig", None) or e).splitlines()[0]
                raise UserError(
                    f"the study storage must be a database this machine can open, but got "
                    f"storage={redact(url)}: {reason}. Check the server, the URL and its password."
                ) from e
            except ImportError as e:  # SQLAlchemy knows the dialect, but its driver is not installed
                reason = str(e.__cause__ or e).rstrip(".")  # Optuna's wrapper hides the module's name
                raise UserError(
                    f"the study storage's database driver must be installed, but got "
                    f"storage={redact(url)}: {reason}. Install the driver (for MySQL: pip install "
                    "PyMySQL, then mysql+pymysql://...), or use postgresql://, whose driver lorasweep "
                    "installs."
                ) from None
    return url


def _journal(path: Path) -> JournalStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(_Journal(str(path), lock_obj=_RepairingLock(path)))


class _RepairingLock(JournalFileSymlinkLock):
    """Optuna's own journal lock (the same lock file, so plain Optuna processes still exclude us),
    which, once held, cuts a partial last record off the journal.

    A kill or a full disk during a write leaves a line without its newline. Optuna reads past it,
    but its next append would join it to a whole record, and from then on every read fails. The
    backend takes this lock only to append, so the repair runs before every append, by whoever
    appends, and while no other writer can be mid-record. A whole journal is only read (its last
    byte)."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path

    def acquire(self) -> bool:
        super().acquire()
        try:
            _cut_partial_record(self.path)
        except BaseException:
            self.release()
            raise
        return True


def _cut_partial_record(path: Path) -> None:
    """Cut the journal back to its last newline, keeping the file as it was beside it."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0 or _byte_at(f, size - 1) == b"\n":
            return
        end = _after_last_newline(f, size)
        backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.partial")
        try:
            shutil.copyfile(path, backup)
        except OSError as e:
            backup.unlink(missing_ok=True)
            raise UserError(
                f"the study journal must end in a whole record, but got journal={str(path)!r}: its last "
                f"{size - end} bytes are a record cut short, and its backup could not be written "
                f"({e.strerror or e}). Free some space (or fix the folder's permissions), then run the "
                "same command again: the partial record is cut then."
            ) from None
        f.truncate(end)
        f.flush()
        os.fsync(f.fileno())
    print(
        f"warning: the study journal {path} ended in a partial record (a write cut short by a kill or "
        f"a full disk): cut {size - end} bytes; the file as it was is kept as {backup}",
        file=sys.stderr,
    )


def _byte_at(f, offset: int) -> bytes:
    f.seek(offset)
    return f.read(1)


def _after_last_newline(f, size: int, chunk: int = 1 << 16) -> int:
    """The offset just after the file's last newline (0: none), read from the end backwards."""
    end = size
    while end > 0:
        start = max(0, end - chunk)
        f.seek(start)
        found = f.read(end - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


class _Journal(JournalFileBackend):
    """The journal file, whose write faults (a full disk, a permission) raise one StoreError that
    names it, instead of a traceback from inside Optuna."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        try:
            super().append_logs(logs)
        except Exception as e:
            fault = store_error(e, f"the study storage {self._file_path}")
            if fault is None:
                raise
            raise fault from e


def require(storage: str | None) -> None:
    """A journal storage must exist before it is read: opening one creates it."""
    journal = journal_path(storage)
    if journal is not None and not journal.exists():
        raise UserError(
            f"the study storage must exist, but got storage={str(journal)!r}. Run a sweep "
            "first (lorasweep run FILE), or pass --storage."
        )


def load_study(name: str | None, storage: str | None) -> optuna.Study:
    """An existing study; without a name, the only study in the storage."""
    require(storage)
    opened = open_storage(storage)
    names = optuna.get_all_study_names(opened)
    if name is None:
        if len(names) != 1:
            raise UserError(
                f"--study must name a study when the storage holds {len(names)}, but got "
                f"none. Studies: {', '.join(names) or '(none)'}."
            )
        name = names[0]
    if name not in names:
        raise UserError(
            f"the study must exist in the storage, but got study={name!r}. "
            f"Studies: {', '.join(names) or '(none)'}."
        )
    return optuna.load_study(study_name=name, storage=opened)


def find_study(name: str, storage: str | None) -> optuna.Study | None:
    """The study of that name if the storage holds it. Read only: a journal file that does not
    exist yet is not created here."""
    journal = journal_path(storage)
    if journal is not None and not journal.exists():
        return None
    opened = open_storage(storage)
    if name not in optuna.get_all_study_names(opened):
        return None
    return optuna.load_study(study_name=name, storage=opened)


class StudyDeleted(SweepStopped):
    """The study was deleted from its storage while a sweep ran it (`lorasweep delete --force`)."""


def require_stored(study: optuna.Study) -> None:
    """Raise StudyDeleted, in one line, if the study is no longer in its storage."""
    if not still_stored(study):
        raise StudyDeleted(
            f"the sweep stopped: study {study.study_name!r} was deleted while it ran (lorasweep delete "
            "--force). Its MLflow runs are closed; run the same command again to start the study anew."
        )


def still_stored(study: optuna.Study) -> bool:
    """Whether the storage still holds this study: by its storage id, so a study deleted and made
    again under the same name (a new id) is not taken for it."""
    try:
        study._storage.get_study_name_from_id(study._study_id)
    except KeyError:  # every Optuna storage's answer for a study id it does not have
        return False
    except Exception:  # a storage that does not answer: not known to be deleted
        return True
    return True
