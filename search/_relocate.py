"""A local MLflow store that moved (or was copied) with its project folder.

MLflow records where artifacts are as absolute URIs: an experiment's artifact_location, each run's
artifact_uri (made from the experiment's when the run is created), and the logged models' and model
versions' locations made from those. After `mv proj proj2` the store and its artifacts sit in proj2,
but the store still points into proj: reading an adapter fails, and a new run's artifacts re-create
proj/mlruns/artifacts and land there (in a copy, in the original's folder).

MLflow has no call that changes an experiment's artifact location (mlflow/mlflow#3144, #8700: the
location is fixed when the experiment is created), so when a process opens a local store, the stale
prefix is rewritten in the store's own tables, in one transaction. Only locations lorasweep laid out
are touched, `<folder>/artifacts/<experiment name>` whose folder is not the store's own now, and only
when the artifacts came along (the experiment's folder is there beside the store) or the old folder
is gone: a store whose artifacts were kept elsewhere on purpose is left alone.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Every column of MLflow's schema that holds an artifact location made from an experiment's.
_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)


def artifact_folder(db: Path) -> Path:
    """Where a local store at `db` keeps its experiments' artifacts: beside it, so that the folder
    holding both moves as one."""
    return db.parent / "artifacts"


def relocate(db: Path) -> str | None:
    """Point the store at `db` to the artifacts beside it where it points into another folder.
    Returns the line that says so, or None when nothing was stale (or the file is no MLflow store
    yet: MLflow itself says what is wrong with it)."""
    here = artifact_folder(db).resolve()
    try:
        con = sqlite3.connect(db, timeout=60)
    except sqlite3.Error:
        return None
    try:
        with con:  # one transaction: a reader sees the old locations or the new, never a mix
            stale = _stale_prefixes(con, here)
            if not stale:
                return None
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            new, runs = here.as_uri() + "/", 0
            for old in stale:
                for table, column in _COLUMNS:
                    if table not in tables:
                        continue
                    changed = con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE substr({column}, 1, ?) = ?",
                        (new, len(old) + 1, len(old), old),
                    ).rowcount
                    runs += changed if table == "runs" else 0
    except sqlite3.Error:  # read-only, locked past the timeout, not a store: left as it is
        return None
    finally:
        con.close()
    olds = ", ".join(_path(p) for p in stale)
    return (
        f"note: the MLflow store {db} was made in another folder; its artifact locations under {olds} "
        f"now point to {here} ({runs} runs)."
    )


def _stale_prefixes(con: sqlite3.Connection, here: Path) -> list[str]:
    """The `file:` URIs of artifact folders (ending in /) that the store's experiments point into
    instead of `here`."""
    try:
        experiments = con.execute("SELECT name, artifact_location FROM experiments").fetchall()
    except sqlite3.Error:  # a new file: MLflow has not made its tables yet
        return []
    stale: dict[str, None] = {}
    for name, location in experiments:
        if not isinstance(location, str) or urlsplit(location).scheme != "file":
            continue
        folder = Path(_path(location))
        if folder.name != name or folder.parent.name != "artifacts":
            continue  # not laid out by lorasweep (MLflow's Default experiment, a location of one's own)
        old = folder.parent
        if old.resolve() == here or not ((here / name).exists() or not old.exists()):
            continue
        stale[location[: -len(location.rsplit("/", 1)[1])]] = None
    return list(stale)


def _path(uri: str) -> str:
    """The local path a `file:` URI names (a prefix's trailing / dropped)."""
    return unquote(urlsplit(uri).path).rstrip("/") or "/"
