"""The URLs of the two stores: where MLflow records by default, which setting wins, and how a URL
is shown (never with its password)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


def tracking_uri(flag: str | None, from_file: str | None) -> str:
    """Flag, then environment, then sweep file (or study), then the local default."""
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or from_file or DEFAULT_TRACKING_URI


def absolute(uri: str) -> str:
    """A sqlite URI with an absolute path. MLflow caches one database engine per URI string for the
    process: a relative path would keep pointing at the first folder it was opened from."""
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def redact(url: str) -> str:
    """A URL safe to print or record: any password is masked."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
