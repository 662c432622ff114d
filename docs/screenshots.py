"""Retake the manual's screenshots from a finished demo sweep (needs Debian's chromium and
chromium-driver, as `make test-browser` installs them):

    make demo && .venv/bin/python docs/screenshots.py

Serves the sweep's stores with `lorasweep ui`, opens MLflow's compare view of trials 0, 1 and 2,
writes the study's report, and saves docs/img/mlflow-ui.png and docs/img/report.png.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

OUT = Path(__file__).resolve().parent / "img"
PORT = 5099


def study_run(base: str, experiment: str, number: int) -> str:
    """The MLflow run id of trial `number`, found by its tag."""
    body = {"experiment_ids": [experiment], "filter": f"tags.`lorasweep.trial_number` = '{number}'"}
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/runs/search", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as r:
        return json.loads(r.read())["runs"][0]["info"]["run_id"]


def main(study: str = "demo", compare: tuple[int, ...] = (0, 1, 2)) -> None:
    OUT.mkdir(exist_ok=True)
    ui = subprocess.Popen(
        [sys.executable, "-P", "-m", "lorasweep.search", "ui", "--port", str(PORT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1300"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        print(ui.stdout.readline().strip())
        base = f"http://127.0.0.1:{PORT}"
        with urllib.request.urlopen(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={study}"
        ) as r:
            experiment = json.loads(r.read())["experiment"]["experiment_id"]
        # MLflow's own compare view of the finished trials: parameters and metrics side by side.
        runs = json.dumps([study_run(base, experiment, n) for n in compare])
        browser.get(f'{base}/#/compare-runs?runs={runs}&experiments=["{experiment}"]')
        WebDriverWait(browser, 90).until(
            lambda b: "f1" in b.find_element(By.TAG_NAME, "body").text and "learning_rate" in b.page_source
        )
        time.sleep(3)
        browser.save_screenshot(str(OUT / "mlflow-ui.png"))

        subprocess.run(
            [sys.executable, "-P", "-m", "lorasweep.search", "-q", "report", "--out", "reports/screenshot"],
            check=True,
        )
        browser.get((Path("reports/screenshot/report.html")).resolve().as_uri() + "#curves")
        time.sleep(3)
        browser.save_screenshot(str(OUT / "report.png"))
        print(f"wrote {OUT / 'mlflow-ui.png'} and {OUT / 'report.png'}")
    finally:
        browser.quit()
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=30)


if __name__ == "__main__":
    main(*sys.argv[1:])
