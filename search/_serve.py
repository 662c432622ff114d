"""`lorasweep ui`: the MLflow UI on the sweep's tracking store, and optuna-dashboard on its study
storage, as child processes bound to one address (127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import IO

from .errors import UserError
from .storage import DEFAULT_STORAGE, journal_path
from .urls import absolute, redact, sqlite_path

READY_TIMEOUT_S = 90


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen
    log: IO[str]  # the server's output, read back if it fails to start

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop the server and everything it started (the MLflow UI runs uvicorn and job runners
        as children): they share a process group of their own."""
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def serve_mlflow(
    uri: str, host: str, port: int, allowed_hosts: str | None = None, cors_allowed_origins: str | None = None
) -> Server:
    """The MLflow UI on `uri`. MLflow's own --allowed-hosts (Host headers it serves: against DNS
    rebinding) and --cors-allowed-origins (sites whose pages may call it) pass through as given."""
    if uri.startswith(("http://", "https://", "databricks")):
        raise UserError(
            f"lorasweep ui serves a local tracking store, but got tracking_uri={redact(uri)}, "
            "which is a server already: open it in a browser."
        )
    database = sqlite_path(uri)
    if database is not None and not database.exists():
        raise UserError(
            f"the MLflow store must exist, but got {uri}. Run a sweep first (lorasweep run FILE), "
            "or pass --tracking-uri."
        )
    # The store's URI goes through the environment (MLflow's own variable for the flag): it may hold
    # a password, and a command line is visible to everyone on the machine.
    command = [sys.executable, "-m", "mlflow", "ui"]
    command += ["--host", host, "--port", str(port), "--workers", "1"]  # one user: one worker
    for flag, value in (("--allowed-hosts", allowed_hosts), ("--cors-allowed-origins", cors_allowed_origins)):
        if value:
            command += [flag, value]
    # MLflow 3.17 also starts a dozen polling job-runner processes for its GenAI jobs, which
    # browsing sweeps never uses.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": absolute(uri)}
    return _start("MLflow UI", command, _url(host, port), "/health", env)


def serve_dashboard(storage: str | None, host: str, port: int) -> Server:
    journal = journal_path(storage)
    if journal is not None:
        if not journal.exists():
            raise UserError(
                f"the study storage must exist, but got storage={str(journal)!r}. Run a sweep first, "
                "or pass --storage."
            )
        target = ["--storage-class", "JournalFileStorage", str(journal)]
    else:
        target = [storage or str(DEFAULT_STORAGE)]
    # optuna-dashboard takes its storage as an argument only: it is handed over in the environment
    # and put into argv inside the process, where `ps` does not see it (a database URL's password).
    start = (
        "import json, os, sys; sys.argv[1:1] = json.loads(os.environ.pop('LORASWEEP_DASHBOARD_STORAGE')); "
        "from optuna_dashboard._cli import main; main()"
    )
    command = [sys.executable, "-c", start, "--host", host, "--port", str(port), "--quiet"]
    env = {"LORASWEEP_DASHBOARD_STORAGE": json.dumps(target)}
    return _start("optuna-dashboard", command, _url(host, port), "/", env)


def _url(host: str, port: int) -> str:
    """Where this machine reaches a server bound to `host` (all interfaces: through loopback)."""
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def _start(name: str, command: list[str], url: str, probe: str, env: dict[str, str] | None = None) -> Server:
    """Start a server and wait until it answers; its own error if it dies first (a busy port...)."""
    # Its log goes to a file, not a pipe: a server logs every request, and a full pipe would stall it.
    log = tempfile.TemporaryFile("w+")  # the Server closes it when it stops
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    server = Server(name, url, process, log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not server.running():
            log.seek(0)
            last = log.read().strip().splitlines()[-3:]
            raise UserError(f"{name} must start on {url}, but it exited: {' '.join(last) or 'no output'}")
        try:
            with urllib.request.urlopen(url + probe, timeout=2):
                return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    server.stop()
    raise UserError(f"{name} must answer on {url} within {READY_TIMEOUT_S} s, but it did not.")
