"""What a hand-over may touch: the champion of its own study, exports folders no one else wrote,
and the registry in its turn.

- Promotes to one registered model take turns (`turn`): a file lock beside a local store's
  database, or, for a server store, in the system temp folder, which only the promotes of one
  machine share: two machines promoting to one server at once are not serialized.
- A champion promoted from another study (the same promote.model_name) is not moved unless the
  user says so (`check_owned`): a study tells its own versions by the study id they carry.
- exports/NAME/vK is this registry's version K; a folder of that name that holds other exports
  (an earlier registry's version K, after the store was reset) is left as it is (`version_folder`),
  and nothing is moved over files someone wrote meanwhile (`replace`).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import optuna
from filelock import FileLock, Timeout
from mlflow.entities.model_registry import ModelVersion

from ..errors import UserError
from ..record import study_id, version_study
from ..urls import sqlite_path

Log = Callable[[str], None]


@contextlib.contextmanager
def turn(uri: str, name: str, log: Log) -> Iterator[int | None]:
    """Hold the lock of registered model `name` in the store `uri` for the block; say so when another
    promote holds it and this one waits. A local store's lock sits beside its database; a server
    store's in the system temp folder, which only the promotes of this machine share. Yields when
    the promote this one waited for took the lock (ms since the epoch; None: none was waited for):
    what that one registered is newer, though it may predate this promote."""
    parts, database = urlsplit(uri), sqlite_path(uri)
    if database is not None:
        lock = database.parent / f".promote-{name}.lock"
    elif parts.scheme in ("", "file"):
        lock = Path(parts.path) / f".promote-{name}.lock"
    else:
        key = hashlib.sha256(f"{uri}\n{name}".encode()).hexdigest()[:16]
        lock = Path(tempfile.gettempdir()) / f"lorasweep-lock-promote-{key}"
    lock.parent.mkdir(parents=True, exist_ok=True)
    held = FileLock(str(lock))
    since = lock.with_name(lock.name + ".since")  # beside the lock: FileLock owns the lock file's bytes
    holder = None
    try:
        held.acquire(timeout=0)
    except Timeout:
        log(f"waiting: another promote to {name!r} is running (lock {lock})")
        with contextlib.suppress(OSError, ValueError):  # a holder that has not written it yet
            holder = int(since.read_text())
        held.acquire()
    try:
        since.write_text(str(int(time.time() * 1000)))
        yield holder
    finally:
        held.release()


def check_owned(study: optuna.Study, name: str, current: ModelVersion) -> None:
    """The champion of `name` must have been promoted from this study (the same study id; a version
    from before the id was recorded: the same study name) for a promote to move it."""
    their_name, their_id = version_study(current.tags)
    ours = their_id == study_id(study) if their_id else their_name == study.study_name
    if not ours:
        whose = f"study {their_name!r}" if their_name else "no lorasweep study"
        if their_name == study.study_name:
            whose += f" (an earlier study of that name, id {their_id})"
        raise UserError(
            f"a promote must not move a champion promoted from another study, but got "
            f"models:/{name}@champion=version {current.version}, from {whose}; this is study "
            f"{study.study_name!r}. Pass --force to move it, or give the study a promote.model_name "
            "of its own."
        )


def version_folder(name: str, version: str, build: Path, log: Log) -> Path:
    """exports/NAME/vVERSION, unless a folder of that name holds other exports (an earlier registry's
    version of that number: the store was reset since), which is left as it is: then vVERSION-2, ..."""
    folder = Path("exports") / name / f"v{version}"
    if not _holds_other(folder, build):
        return folder
    k = 2
    while (other := folder.with_name(f"{folder.name}-{k}")).exists():
        k += 1
    log(
        f"note: {folder} holds other exports than these (an earlier store's version {version} of {name!r}, "
        f"say, from before `rm -rf mlruns`): left as they are; these go to {other}"
    )
    return other


def _holds_other(folder: Path, build: Path) -> bool:
    """`folder` exists and is not empty, and is not these exports (a killed promote's, completed now)."""
    if not folder.is_dir() or not any(folder.iterdir()):
        return folder.exists() and not folder.is_dir()
    mine, theirs = build / "parity.json", folder / "parity.json"
    return not (mine.is_file() and theirs.is_file() and mine.read_bytes() == theirs.read_bytes())


def replace(destination: Path, build: Path, ours: bool = False) -> None:
    """Move `build` to `destination`: a new or empty folder, or (`ours`) the same exports that a
    killed promote moved there. Anything else there is someone's, and stays."""
    if destination.is_dir() and (ours or not any(destination.iterdir())):
        shutil.rmtree(destination)
    elif destination.exists():
        raise UserError(
            f"an exports folder must be new or empty when the exports are moved there, but got "
            f"{destination}, which now holds files (written while this ran). Its files are left as they "
            f"are; run again with another --out."
        )
    build.rename(destination)
    destination.chmod(0o755)  # mkdtemp made it private
