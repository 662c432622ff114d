"""A new local MLflow store, made from a ready empty one rather than migrated.

MLflow creates a SQLite store's schema by running every alembic migration since its first release:
1.3-1.9 s on the 2-core development machine, at the start of every new study's store. The result is
the same file for one MLflow version, so it is made once per installed version in lorasweep's cache
folder (`mlflow-<version>.db`, under a file lock, written atomically) and copied to each new store's
path. MLflow then finds every table there and runs nothing. The one thing in it that depends on
where it was made, the default experiment's artifact location, is set in the copy to what MLflow
would have written. A template that is missing, unreadable or not a migrated store is made again;
where the cache cannot be written, the store is migrated in place as before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from filelock import FileLock

from lorasweep.objectives import cache_root

_DEFAULT_EXPERIMENT = "0"


def seed(db: Path) -> bool:
    """Put an empty migrated store at `db`, which does not exist (the caller holds its lock).
    Returns whether it did; False leaves MLflow to create the schema itself."""
    try:
        template = _template()
        part = Path(tempfile.mkstemp(dir=db.parent, prefix=f".{db.name}.", suffix=".part")[1])
        try:
            shutil.copyfile(template, part)
            umask = os.umask(0)
            os.umask(umask)
            part.chmod(0o666 & ~umask)  # as a file SQLite creates, not mkstemp's 0600
            with contextlib.closing(sqlite3.connect(part)) as con, con:
                con.execute(
                    "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                    (_default_location(), int(_DEFAULT_EXPERIMENT)),
                )
            os.replace(part, db)
        finally:
            part.unlink(missing_ok=True)
        return True
    except (OSError, sqlite3.Error):
        return False


def template_path() -> Path:
    import mlflow

    return cache_root() / f"mlflow-{mlflow.__version__}.db"


def _template() -> Path:
    """The cached empty store for the installed MLflow, made if missing or not a migrated store."""
    path = template_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if _migrated(path):
            return path
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
        part = Path(name)
        try:
            part.unlink()  # MLflow makes the file itself
            _migrate(part)
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
    return path


def _migrate(db: Path) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri = f"sqlite:///{db}"
    with tempfile.TemporaryDirectory() as artifacts:
        SqlAlchemyStore(uri, artifacts)
        engine = getattr(SqlAlchemyStore, "_engine_map", {}).pop(uri, None)
        if engine is not None:
            engine.dispose()


def _migrated(path: Path) -> bool:
    """Whether `path` holds MLflow's schema at this version's head with only the default experiment."""
    if not path.is_file():
        return False
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            (revision,) = con.execute("SELECT version_num FROM alembic_version").fetchone()
            (experiments,) = con.execute("SELECT count(*) FROM experiments").fetchone()
        return revision == _get_latest_schema_revision() and experiments == 1
    except (sqlite3.Error, TypeError, ValueError):
        return False


def _default_location() -> str:
    """The default experiment's artifact location, as MLflow's store would set it from here."""
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH  # where it is defined
    from mlflow.tracking._tracking_service.utils import _SERVER_ARTIFACT_ROOT_ENV_VAR
    from mlflow.utils.uri import append_to_uri_path, resolve_uri_if_local

    root = os.environ.get(_SERVER_ARTIFACT_ROOT_ENV_VAR, DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
    return append_to_uri_path(resolve_uri_if_local(root), _DEFAULT_EXPERIMENT)
