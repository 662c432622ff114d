"""The URLs of the two stores: where MLflow records by default, which setting wins, and how a URL
is shown (never with its password)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
# The study storage's counterpart of MLFLOW_TRACKING_URI: the CLI takes the storage URL from here
# when no --storage is given, and the workers of `run --workers N` get theirs this way, so that a
# password never stands on a process's command line.
STORAGE_ENV = "LORASWEEP_STORAGE"
# Query parameters that carry credentials (postgresql://h/db?password=..., presigned URLs, tokens).
_SECRET_PARAMETER = re.compile(
    r"(?i)(^|[?&;])"  # the start of a parameter
    r"([\w.-]*?(?:password|passwd|pwd|secret|token|api[_-]?key|sig|signature|credential)[\w.-]*)"
    r"=([^&;#]*)"
)


def tracking_uri(flag: str | None, from_file: str | None) -> str:
    """Flag, then environment, then sweep file (or study), then the local default."""
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or from_file or DEFAULT_TRACKING_URI


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local SQLite store (sqlite:///relative/x.db, sqlite:////abs/x.db), or
    None for any other store. The one reading of such a URL: its lock, its artifacts and its folder
    all sit beside this file."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def is_local(uri: str) -> bool:
    """Whether a tracking URI is a store on this machine's disk (SQLite, a file store or a bare
    path), whose experiments become folders; a server names its experiments as it likes."""
    # MLflow reads a bare "databricks" as the Databricks workspace, not as a folder of that name.
    return uri != "databricks" and urlsplit(uri).scheme in ("", "file", "sqlite")


def absolute(uri: str) -> str:
    """A sqlite URI with an absolute path. MLflow caches one database engine per URI string for the
    process: a relative path would keep pointing at the first folder it was opened from."""
    path = sqlite_path(uri)
    if path is None:
        return uri
    query = uri.partition("?")[2]
    return f"sqlite:///{path.resolve()}" + (f"?{query}" if query else "")


def redact(url: str) -> str:
    """A URL safe to print or record: passwords, tokens in the user part of an http(s) URL
    (https://TOKEN@host, as GitHub and others take them) and secret query parameters are masked."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL at all (an unclosed [ in the host): nothing to mask reliably
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if parts.password is not None:
            userinfo = f"{parts.username}:***"
        elif parts.scheme in ("http", "https"):
            userinfo = "***"
        netloc = f"{userinfo}@{host}"
    query = _SECRET_PARAMETER.sub(lambda m: f"{m[1]}{m[2]}=***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))
