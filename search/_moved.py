"""A study made before its project folder was moved or copied: earlier versions stored its MLflow
store (`resume` stored sqlite:////<old>/mlruns/mlflow.db) and its sweep file as absolute paths into
<old>. Read from the project's new folder, those would write into the old folder's store (for a copy,
into the original project's) and read the old data. Here they are put back under this folder, with
one note, and only where this folder's own default store holds the study's runs: another project's
store is never written into silently, and never taken for this one's either.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .urls import DEFAULT_TRACKING_URI, sqlite_path

_DEFAULT_DB = Path(DEFAULT_TRACKING_URI.removeprefix("sqlite:///"))  # mlruns/mlflow.db


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Moved:
    """The project folder a study's stored paths name (`old`) and the one it is read from (`new`)."""

    old: Path
    new: Path

    def uri(self) -> str:
        """The working folder's default store, relative as a new study stores it: saved again by the
        next run, it follows the folder on any later move without this module."""
        return DEFAULT_TRACKING_URI

    def path(self, stored: Path) -> Path:
        """A stored absolute path under the old folder, under the new one; any other as it is."""
        try:
            return self.new / stored.relative_to(self.old)
        except ValueError:
            return stored


# (stored URI, parent run, working folder) -> the answer: a command asks several times, says it once.
_known: dict[tuple[str, str | None, Path], Moved | None] = {}


def moved(
    stored_uri: str | None, parent_run_id: str | None, note: Callable[[str], None] = _note
) -> Moved | None:
    """Where a study's stored absolute default store lies in another project folder than the working
    one, whose own default store holds the study's parent run (or the study has none yet): the two
    folders, said once in a note. None otherwise: a relative store, a server, a store elsewhere than
    <project>/mlruns/mlflow.db, or a working folder that is not the study's project."""
    database = sqlite_path(stored_uri or "")
    if database is None or not database.is_absolute() or database.parts[-2:] != _DEFAULT_DB.parts:
        return None
    old, new = database.parent.parent, Path.cwd().resolve()
    key = (str(stored_uri), parent_run_id, new)
    if key not in _known:
        _known[key] = _find(database, old, new, parent_run_id, note)
    return _known[key]


def _find(
    database: Path, old: Path, new: Path, parent_run_id: str | None, note: Callable[[str], None]
) -> Moved | None:
    here = new / _DEFAULT_DB
    if old == new or not here.is_file() or not _holds(here, parent_run_id):
        return None
    note(
        f"note: the study's MLflow store was recorded as {database}, in another folder than this "
        f"project's; reading and writing this folder's own store {here} instead (the project was moved "
        "or copied)"
    )
    return Moved(old, new)


def _holds(database: Path, parent_run_id: str | None) -> bool:
    """Whether a local store holds the run: then it is this study's store, not a stranger's."""
    if parent_run_id is None:
        return True
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(f"sqlite:///{database}").get_run(parent_run_id)
    except MlflowException:
        return False
    return True
