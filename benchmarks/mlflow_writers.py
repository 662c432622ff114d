"""Several processes writing trial runs to one local MLflow store at once: straight into the SQLite
file, or through an MLflow server on loopback in front of the same file.

    .venv/bin/python benchmarks/mlflow_writers.py        (or: make bench-mlflow)

Each writer process records RUNS trial runs the way a lorasweep worker does (through MlflowClient:
a nested run, 30 parameters, a learning curve of 10 points, final metrics, a small adapter folder,
a tag, the run closed), back to back and with no training in between: far denser writing than a
real sweep. Printed per setup and number of writers: runs written, errors (such as "database is
locked"), runs found in the store afterwards, and the seconds the slowest writer took from its first
write to its last. This decides how `run --workers N` records to the default store.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

RUNS = 20
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # not the schema's creation, once per store
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # nor a line per run


def write_runs(uri: str, experiment_id: str, parent: str, results) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(uri)
    client.get_experiment(experiment_id)  # connected before the clock starts
    written, errors = 0, []
    started = time.monotonic()
    for _ in range(RUNS):
        try:
            run = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent})
            run_id = run.info.run_id
            client.log_batch(run_id, params=[Param(f"p{i}", str(i)) for i in range(30)])
            for step in range(10):
                now = int(time.time() * 1000)
                client.log_batch(run_id, metrics=[Metric("eval_loss", 1 / (step + 1), now, step)])
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(f"m{i}", i, now, 10) for i in range(8)])
            with tempfile.TemporaryDirectory() as folder:
                Path(folder, "adapter_model.safetensors").write_bytes(os.urandom(64 * 1024))
                client.log_artifacts(run_id, folder, "adapter")
            client.set_tag(run_id, "lorasweep.state", "COMPLETE")
            client.set_terminated(run_id, "FINISHED")
            written += 1
        except Exception as e:  # counted and shown: that is the measurement
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:120]}")
    results.put((written, errors, time.monotonic() - started))


def serve(db: str, artifacts: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            db,
            "--artifacts-destination",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return server, url
        except OSError:
            time.sleep(0.2)


def measure(setup: str, writers: int) -> tuple[int, list[str], int, float]:
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory(prefix="lorasweep-bench-mlflow-") as folder:
        db = f"sqlite:///{folder}/mlflow.db"
        MlflowClient(db).search_experiments()  # the schema, created once, as `run` does before its workers
        server, uri = serve(db, Path(folder, "artifacts")) if setup == "server" else (None, db)
        try:
            client = MlflowClient(uri)
            experiment = client.create_experiment("bench", artifact_location=Path(folder, "runs").as_uri())
            parent = client.create_run(experiment).info.run_id
            results = multiprocessing.get_context("spawn").Queue()
            processes = [
                multiprocessing.get_context("spawn").Process(
                    target=write_runs, args=(uri, experiment, parent, results)
                )
                for _ in range(writers)
            ]
            for process in processes:
                process.start()
            outcomes = [results.get() for _ in processes]
            for process in processes:
                process.join()
            stored = len(MlflowClient(db).search_runs([experiment], max_results=10000)) - 1
        finally:
            if server is not None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait()
    written = sum(o[0] for o in outcomes)
    # The slowest writer's time from its first write to its last (interpreter start-up left out).
    return written, [e for o in outcomes for e in o[1]], stored, max(o[2] for o in outcomes)


def main() -> int:
    print(f"{len(os.sched_getaffinity(0))} cores; load average before: {os.getloadavg()[0]:.2f}")
    print(f"{RUNS} runs per writer\n")
    print("setup                        writers  runs  errors  in store  seconds  s/run")
    for writers in (2, 4):
        for setup, label in (("sqlite", "SQLite file, direct"), ("server", "mlflow server on loopback")):
            written, errors, stored, seconds = measure(setup, writers)
            print(
                f"{label:<27}  {writers:>7}  {written:>4}  {len(errors):>6}  {stored:>8}  {seconds:>7.1f}"
                f"  {seconds / max(written, 1):>5.2f}"
            )
            for error in sorted(set(errors))[:3]:
                print(f"    {error}")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
