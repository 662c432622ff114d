"""`lorasweep ui` on a finished sweep: the MLflow UI and optuna-dashboard served on 127.0.0.1, and
(marked `browser`, run in CI by `make test-browser`) headless Chromium looking at them and at the
report. Screenshots land in $LORASWEEP_SCREENSHOTS (default: the test's tmp folder)."""

from __future__ import annotations

import json
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

import psutil
import pytest

from lorasweep.search import RunOptions, load_sweep, run_sweep
from lorasweep.search.cli import main

from .test_compare import SWEEP, scored_runner


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(stores, write):
    """A finished stub sweep, `lorasweep ui --dashboard` serving it; yields (ui url, dashboard url,
    the process, the study)."""
    study = run_sweep(load_sweep(write(SWEEP)), RunOptions(quiet=True), runner=scored_runner())
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "lorasweep.search", "ui", "--port", str(port), "--dashboard"],
        cwd=stores,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ui_line, dashboard_line = proc.stdout.readline(), proc.stdout.readline()
        assert ui_line.startswith(f"MLflow UI: http://127.0.0.1:{port}"), ui_line + proc.stderr.read()
        # the study's runs table, in the view MLflow 3.17's UI opens it in (not GenAI's overview)
        assert "/#/experiments/1/runs?workflowType=machine_learning  (Ctrl-C stops it)" in ui_line, ui_line
        assert dashboard_line.startswith(f"optuna-dashboard: http://127.0.0.1:{port + 1}"), dashboard_line
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}", proc, study
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def _json(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_ui_serves_both_stores_on_loopback_and_stops_cleanly(served):
    ui, dashboard, proc, _ = served
    experiment = _json(f"{ui}/api/2.0/mlflow/experiments/get-by-name?experiment_name=cmp")["experiment"]
    runs = _json(f"{ui}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})[
        "runs"
    ]
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
    assert sorted(t["lorasweep.role"] for t in tags) == ["study"] + ["trial"] * 4
    parent = next(
        r["info"]["run_id"] for r, t in zip(runs, tags, strict=True) if t["lorasweep.role"] == "study"
    )
    assert all(t["mlflow.parentRunId"] == parent for t in tags if t["lorasweep.role"] == "trial")
    assert {t["lorasweep.state"] for t in tags if t["lorasweep.role"] == "trial"} == {"COMPLETE", "PRUNED"}
    assert [s["study_name"] for s in _json(f"{dashboard}/api/studies")["study_summaries"]] == ["cmp"]

    children = psutil.Process(proc.pid).children(recursive=True)
    listening = {
        c.laddr.port: c.laddr.ip
        for p in children
        for c in p.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }
    port = int(ui.rsplit(":", 1)[1])
    assert listening.get(port) == "127.0.0.1" and listening.get(port + 1) == "127.0.0.1"
    # The stores' URLs (which may hold a password) are on no command line, where ps would show them.
    assert not [
        c for c in children if "mlflow.db" in " ".join(c.cmdline()) or ".journal" in " ".join(c.cmdline())
    ]

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    time.sleep(1)
    assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_ui_beyond_loopback_warns_and_answers_only_the_allowed_hosts(stores, write):
    run_sweep(load_sweep(write(SWEEP)), RunOptions(quiet=True, plots=False), runner=scored_runner())
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-P",
            "-m",
            "lorasweep.search",
            "ui",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--allowed-hosts",
            f"127.0.0.1:{port}",
        ],
        cwd=stores,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        warning = proc.stderr.readline()
        assert warning.startswith("warning: --host 0.0.0.0 lets other machines read, change and delete")
        assert proc.stdout.readline().startswith(f"MLflow UI: http://127.0.0.1:{port}")
        search = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=5"
        assert any(e["name"] == "cmp" for e in _json(search)["experiments"])
        forged = urllib.request.Request(search, headers={"Host": "rebound.example"})  # DNS rebinding
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=10)
        assert refused.value.code in (400, 403)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_ui_refuses_a_store_that_does_not_exist(in_tmp, capsys):
    assert main(["ui", "--port", str(_free_port())]) == 2
    assert "the MLflow store must exist" in capsys.readouterr().err


# -- in a real browser ---------------------------------------------------------------------------
def _browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail(
            "headless Chromium is needed: apt-get install chromium chromium-driver (make test-browser)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LORASWEEP_SCREENSHOTS", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait_for_text(browser, *texts: str, timeout: float = 60) -> str:
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = browser.find_element(By.TAG_NAME, "body").text
        if all(t in body for t in texts):
            return body
        time.sleep(0.5)
    pytest.fail(f"the page never showed {texts}; it showed: {body[:500]!r}")


@pytest.mark.browser
def test_the_mlflow_ui_lists_the_parent_and_its_nested_trial_runs(served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    ui, *_ = served
    experiment = _json(f"{ui}/api/2.0/mlflow/experiments/get-by-name?experiment_name=cmp")["experiment"]
    browser = _browser()
    try:
        browser.get(f"{ui}/#/experiments/{experiment['experiment_id']}/runs")
        _wait_for_text(browser, "cmp", "matching runs")
        assert "trial-0" not in browser.find_element(By.TAG_NAME, "body").text  # folded under the parent
        # The expander beside the parent's name (MLflow 3.17's run-name cell) unfolds its trials.
        expander = (By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']")
        WebDriverWait(browser, 60).until(expected_conditions.element_to_be_clickable(expander)).click()
        body = _wait_for_text(browser, "cmp", *(f"trial-{n}" for n in range(4)))
        assert body.count("trial-") == 4
        browser.save_screenshot(str(_screenshots(tmp_path) / "mlflow-ui.png"))
    finally:
        browser.quit()


@pytest.mark.browser
def test_the_report_shows_every_plot_in_a_browser(served, stores, tmp_path):
    assert main(["report", "--out", str(stores / "report")]) == 0
    browser = _browser()
    try:
        browser.get((stores / "report" / "report.html").as_uri())
        _wait_for_text(
            browser,
            "Optimization history",
            "Parallel coordinates",
            "Parameter importances",
            "Slice",
            "Learning curves",
        )
        rendered = browser.execute_script(
            "return document.querySelectorAll('.plotly-graph-div .main-svg').length"
        )
        # plotly drew every figure (offline: its script is inline); the importances of 3 complete
        # trials are left out, with the reason in their place
        assert rendered >= 4
        assert "Left out: fANOVA needs at least" in browser.find_element("tag name", "body").text
        browser.save_screenshot(str(_screenshots(tmp_path) / "report.png"))
    finally:
        browser.quit()
