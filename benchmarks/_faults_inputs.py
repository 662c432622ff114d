"""The faults of what a sweep is given and where it lives: a project folder moved, names that are
paths or too long, a data file that links to secrets, a sweep file that is not a file, the MLflow
server gone for a while, the knobs cache emptied."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from _faults_harness import (
    FP32,
    STUDY,
    Done,
    Row,
    cut,
    ended,
    finished,
    lorasweep,
    lost,
    many,
    nothing_written,
    running,
    spawn,
    start,
    sweep,
    wait_for,
)


def _adapters(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.glob("mlruns/artifacts/**/adapter_model.safetensors")}


def project_moved(folder: Path) -> Row:
    """`mv proj proj2` after a sweep: the stores hold proj's absolute paths."""
    old, new = folder / "proj", folder / "proj2"
    old.mkdir()
    before = start(old, 2, sweep(2, more=FP32))
    adapters = _adapters(old)
    old.rename(new)
    resumed = lorasweep(new, "resume", STUDY, "--trials", "3")
    export = lorasweep(new, "export", "--out", "X")
    return Row(
        "the project folder moved (`mv proj proj2`), then `resume faults --trials 3`, `export`",
        resumed.first(),
        lost(new, before),
        running(new),
        f"{len(_adapters(new) - adapters)} new adapter(s) under proj2/mlruns/artifacts; "
        f"export: exit {export.code}; proj re-created: {old.exists()}",
    )


def _one_line_each(done: list[Done | None]) -> str:
    codes = [d.code if d else "blocked" for d in done]
    ones = all(d is not None and len(d.printed) == 1 and not d.traceback for d in done)
    first = next((d.shown[0] for d in done if d and d.shown), "")
    return f"exits {codes}; one line each, no traceback: {ones}" + (f': "{cut(first)}"' if first else "")


def experiment_paths(folder: Path) -> Row:
    """tracking.experiment an absolute path, ../../../x or ..; --study .. (and study.name ..)."""
    absolute = Path(f"/tmp/lorasweep-faults-x-{os.getpid()}")
    outside = [absolute, folder / "x", Path("/tmp/x"), Path("/x")]  # where the names could lead
    there = {p for p in outside if p.exists()}
    calls = []
    for i, name in enumerate([str(absolute), "../../../x", ".."]):
        (folder / f"e{i}").mkdir()
        text = sweep(1, more=f"tracking: {{experiment: '{name}'}}\n")
        (folder / f"e{i}" / "s.yaml").write_text(text, encoding="utf-8")
        calls += [(folder / f"e{i}", ("validate", "s.yaml")), (folder / f"e{i}", ("run", "s.yaml"))]
    (folder / "s").mkdir()
    (folder / "s" / "s.yaml").write_text(sweep(1).replace(f"name: {STUDY},", "name: '..',"), encoding="utf-8")
    calls += [(folder / "s", ("validate", "s.yaml")), (folder / "s", ("run", "s.yaml", "--study", ".."))]
    done = many(calls)
    made = [p for p in outside if p.exists() and p not in there]
    untouched = all(nothing_written(folder / f) for f in ("e0", "e1", "e2", "s"))
    shutil.rmtree(absolute, ignore_errors=True)  # its own, if made (the others may be anyone's)
    return Row(
        f"`tracking: {{experiment: {absolute}}}`, `../../../x`, `..`; `--study ..`: validate and run each",
        _one_line_each(done),
        "-",
        "-",
        f"nothing written: {untouched}; made outside: {', '.join(map(str, made)) or 'nothing'}",
    )


def study_name_300(folder: Path) -> Row:
    name = "n" * 300
    (folder / "s.yaml").write_text(sweep(1).replace(f"name: {STUDY},", f"name: {name},"), encoding="utf-8")
    done = many([(folder, ("validate", "s.yaml")), (folder, ("run", "s.yaml", "--study", name))])
    return Row(
        "a study name of 300 characters: validate (study.name), run (`--study`)",
        _one_line_each(done),
        "-",
        "-",
        f"nothing written: {nothing_written(folder)}",
    )


SECRET = "root:SECRET-4f1d9a:19000:0:99999:7:::"


def data_links_to_secrets(folder: Path) -> Row:
    """data.path a .csv symlink to a file whose first line is a secret; and to /etc/shadow."""
    data = "path: data.csv, prompt_template: 'Q: {q}', response_template: ' {a}'"
    secrets = {"own": [SECRET]}
    (folder / "secrets").write_text(f"{SECRET}\nq,a\nwhy,yes\n", encoding="utf-8")
    targets = {"own": folder / "secrets"}
    if os.access("/etc/shadow", os.R_OK):
        targets["shadow"] = Path("/etc/shadow")
        lines = [line for line in Path("/etc/shadow").read_text().splitlines() if line.strip()]
        secrets["shadow"] = lines + [":".join(line.split(":")[:2]) for line in lines]
    calls = []
    for what, target in targets.items():
        (folder / what).mkdir()
        (folder / what / "data.csv").symlink_to(target)
        (folder / what / "s.yaml").write_text(sweep(1, data=data), encoding="utf-8")
        calls += [(folder / what, ("validate", "s.yaml")), (folder / what, ("run", "s.yaml"))]
    done = many(calls)
    said = {
        what: "\n".join(line for d in done[2 * i : 2 * i + 2] if d for line in d.out + d.err)
        for i, what in enumerate(targets)
    }
    shown = {what: any(secret in said[what] for secret in secrets[what]) for what in targets}
    return Row(
        "data.path a `.csv` symlink to a file with a secret first line"
        + (", and one to /etc/shadow" if "shadow" in targets else " (/etc/shadow unreadable: skipped)"),
        _one_line_each(done),
        "-",
        "-",
        f"the file's content shown: {', '.join(f'{w}: {s}' for w, s in shown.items())}; "
        f"nothing written: {all(nothing_written(folder / w) for w in targets)}",
    )


def sweep_file_not_a_file(folder: Path) -> Row:
    """The sweep file is a directory; a FIFO that no one writes (a read would block)."""
    (folder / "d.yaml").mkdir()
    os.mkfifo(folder / "f.yaml")
    calls = [(folder, (command, name)) for name in ("d.yaml", "f.yaml") for command in ("validate", "run")]
    done = many(calls, timeout=60)
    return Row(
        "the sweep file is a directory; a FIFO: validate and run each",
        f"directory: {_one_line_each(done[:2])}; FIFO: {_one_line_each(done[2:])}",
        "-",
        "-",
        f"nothing written: {nothing_written(folder)}",
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(folder: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on loopback, its runs in folder/mlruns/mlflow.db, artifacts under mlruns/."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder}/mlruns/mlflow.db",
            "--artifacts-destination",
            str(folder / "mlruns" / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # uvicorn's workers: stopped as a group
    )

    def serves() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    assert wait_for(serves, timeout=120), "mlflow server did not start"
    return server


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGKILL)  # down at once, as a crash or a lost network would be
    server.wait()


DOWN_S = 25


def tracking_server_down(folder: Path) -> Row:
    """The MLflow server killed once trial 0 has finished, and started again DOWN_S s later."""
    port = _free_port()
    (folder / "mlruns").mkdir()
    server = _server(folder, port)
    text = sweep(6, more=f"tracking: {{uri: 'http://127.0.0.1:{port}'}}\n")
    (folder / "s.yaml").write_text(text, encoding="utf-8")
    sweeping = spawn(folder, "run", "s.yaml", out=True)
    try:
        wait_for(lambda: finished(folder), timeout=300)
        _stop(server)
        time.sleep(DOWN_S)
        server = _server(folder, port)
        done = ended(sweeping, timeout=600)
    finally:
        _stop(server)
    said = done.out + done.printed
    warnings = [line for line in said if line.startswith("warning:")]
    raw = [line for line in said if "urllib3" in line or "Retrying (" in line or line.startswith("WARNING")]
    return Row(
        f"the MLflow server down {DOWN_S} s mid-sweep (killed; started again on its port and store)",
        f"{done.exit()}; {len(warnings)} warning lines"
        + (f" ({done.glued} written onto the progress bar's line)" if done.glued else "")
        + "".join(f'; "{cut(w, 110)}"' for w in warnings[:3])
        + f"; raw library lines: {len(raw)}"
        + (f' ("{cut(raw[0], 80)}")' if raw else ""),
        lost(folder, finished(folder)),
        running(folder),
        f"{len(finished(folder))}/6 finished",
    )


def knobs_cache_emptied(folder: Path) -> Row:
    from lorasweep.objectives import _knobs

    cache = folder / "cache"
    cache.mkdir()
    files = [cache / f"{_knobs._stem()}{suffix}.json" for suffix in ("", "-verdicts")]
    for path in files:
        path.write_text("{}", encoding="utf-8")
    (folder / "s.yaml").write_text(sweep(1), encoding="utf-8")
    done = lorasweep(folder, "validate", "s.yaml", env={"LORASWEEP_CACHE": str(cache)})
    rebuilt = [p.name for p in files if p.read_text(encoding="utf-8").strip() != "{}"]
    return Row(
        "the knobs cache ($LORASWEEP_CACHE/knobs*.json) holds `{}`; `validate`",
        done.first(),
        "-",
        "-",
        f"rebuilt: {', '.join(rebuilt) or 'neither file'}",
    )
