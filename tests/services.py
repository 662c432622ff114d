"""Real services for the `service` tests, on loopback only: a PostgreSQL cluster of its own (Debian's
postgresql package; `make test-service` installs it) and an MLflow tracking server backed by it.

The cluster lives in a temporary folder on a free port with password authentication over TCP, as a
shared server would; as root its processes run as the `postgres` user (PostgreSQL refuses root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

USER, PASSWORD = "lorasweep", "s3cret-for-tests"


@dataclass(frozen=True)
class Postgres:
    port: int

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        # autocommit: CREATE DATABASE cannot run in a transaction
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_binaries() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        pytest.fail(
            "the service tests need PostgreSQL's server, but /usr/lib/postgresql/*/bin/initdb is not "
            "there. Run make test-service: it installs Debian's postgresql package."
        )
    return found[-1].parent


def _as_owner() -> dict:
    """PostgreSQL will not run as root: there, its programs run as the package's postgres user."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": pwd.getpwnam("postgres").pw_gid, "extra_groups": []}


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    binaries = _server_binaries()
    folder = Path(tempfile.mkdtemp(prefix="lorasweep-pg-"))
    owner = _as_owner()
    if owner:
        shutil.chown(folder, "postgres", owner["group"])
    (folder / "password").write_text(PASSWORD)
    if owner:
        shutil.chown(folder / "password", "postgres", owner["group"])
    port = free_port()
    data = folder / "data"
    run = {"capture_output": True, "text": True, **owner}
    try:
        subprocess.run(
            [
                binaries / "initdb",
                "-D",
                data,
                "-U",
                USER,
                f"--pwfile={folder / 'password'}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
            ],
            check=True,
            **run,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
        subprocess.run(
            [binaries / "pg_ctl", "-D", data, "-l", folder / "server.log", "-o", options, "-w", "start"],
            check=True,
            **run,
        )
    except subprocess.CalledProcessError as e:
        log = folder / "server.log"
        pytest.fail(
            f"PostgreSQL did not start: {e.stderr or e.stdout} {log.read_text() if log.exists() else ''}"
        )
    try:
        yield Postgres(port)
    finally:
        subprocess.run([binaries / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], check=False, **run)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(postgres: Postgres, tmp_path_factory) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with its runs in PostgreSQL and artifacts served from a folder."""
    store = postgres.create_database("mlflow")
    artifacts = tmp_path_factory.mktemp("mlflow-artifacts")
    port = free_port()
    log = tempfile.TemporaryFile("w+")  # closed in finally
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            store,
            "--artifacts-destination",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        # Without MLflow's job runner (GenAI evaluation jobs): a dozen idle processes that poll.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # it runs uvicorn workers: stopped as a group
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                break
        except (urllib.error.URLError, OSError):
            if server.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"mlflow server did not start: {log.read()[-2000:]}")
            time.sleep(0.5)
    try:
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=5)  # uvicorn drains keep-alive connections for much longer
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
