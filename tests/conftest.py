"""Shared fixtures. Tests never reach a hub: the tiny base and the data ship with the package."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .services import mlflow_server, postgres  # noqa: F401 - fixtures of the service tests

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests choose their own store

# A shell starts a background job (`make test &`, nohup) with SIGINT ignored, and the lorasweep
# processes the tests spawn inherit that: the Ctrl-C tests then saw sweeps run on to exit 0. They
# test what Ctrl-C does, so Ctrl-C is given back its default here (and to every process spawned).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent


def docs_script(name: str) -> ModuleType:
    """docs/NAME.py (a generator of the manual's pages, not part of the package) as a module."""
    spec = importlib.util.spec_from_file_location(f"docs_{name}", ROOT / "docs" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _no_tracking_uri_from_earlier_tests(monkeypatch) -> None:
    """mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI, which lorasweep honours: one test's
    store must not become the next one's. Tests that need it set it with monkeypatch."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in an empty folder, so mlruns/ (MLflow and Optuna stores) lands in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def _empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow database with its schema migrated: creating one takes about 4 s, copying it 0.1 s."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def stores(in_tmp, _empty_mlflow_db) -> Path:
    """in_tmp, with mlruns/mlflow.db already created (for tests that run sweeps, not those checking
    that bad input writes nothing)."""
    (in_tmp / "mlruns").mkdir()
    shutil.copy(_empty_mlflow_db, in_tmp / "mlruns" / "mlflow.db")
    return in_tmp


@pytest.fixture
def write(tmp_path):
    """Write a sweep file into tmp_path and return its path."""

    def _write(text: str, name: str = "sweep.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return _write


def spawn_lorasweep(folder, *args: str) -> subprocess.Popen:
    """`lorasweep -q ARGS` as its own process in `folder` (a process to kill, or several at once);
    stderr is piped for the test to read."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "lorasweep.search", "-q", *args],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
