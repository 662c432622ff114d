"""The MLflow record of one trial: curve points are batched, and nothing is lost when a trial ends."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from lorasweep.objectives import TrialResult
from lorasweep.search import tracking
from lorasweep.search.tracking import Tracker


@pytest.fixture
def tracker(stores) -> Tracker:
    return Tracker("sqlite:///mlruns/mlflow.db", "batched")


def _steps(tracker: Tracker, run_id: str, key: str) -> list[int]:
    return [m.step for m in MlflowClient(tracker.uri).get_metric_history(run_id, key)]


def test_curve_points_wait_for_the_trials_end_and_arrive_in_one_piece(tracker, monkeypatch):
    monkeypatch.setattr(tracking, "CURVE_FLUSH_S", 1e9)  # however slow this machine is today
    parent = tracker.parent_run("s", None, {}, "")
    run_id = tracker.start_trial(parent, "s", 0, {"r": 8}, ["r"])
    for step in (10, 20, 30):
        tracker.log_curve(run_id, step, {"loss": 1 / step, "eval_loss": 2 / step})
    assert _steps(tracker, run_id, "loss") == []  # held back: one call at the end, not one per log
    tracker.finish_trial(run_id, TrialResult(metrics={"eval_loss": 0.05}, adapter_dir=None, steps=30), 1.0)
    assert _steps(tracker, run_id, "loss") == [10, 20, 30]
    run = MlflowClient(tracker.uri).get_run(run_id)
    assert run.data.metrics["eval_loss"] == 0.05  # the final value, not the last curve point
    assert run.data.tags["lorasweep.state"] == "COMPLETE" and run.info.status == "FINISHED"


def test_a_long_trial_sends_its_curve_as_it_goes(tracker, monkeypatch):
    parent = tracker.parent_run("s", None, {}, "")
    run_id = tracker.start_trial(parent, "s", 0, {}, [])
    tracker.log_curve(run_id, 10, {"loss": 1.0})
    monkeypatch.setattr(tracking, "CURVE_FLUSH_S", 0.0)  # as if CURVE_FLUSH_S had passed
    tracker.log_curve(run_id, 20, {"loss": 0.5})
    assert _steps(tracker, run_id, "loss") == [10, 20]  # live in the UI before the trial ends


@pytest.mark.parametrize("end", ["prune", "fail"])
def test_pruned_and_failed_trials_keep_every_curve_point(tracker, end):
    parent = tracker.parent_run("s", None, {}, "")
    run_id = tracker.start_trial(parent, "s", 0, {}, [])
    tracker.log_curve(run_id, 10, {"eval_loss": 3.0})
    tracker.log_curve(run_id, 20, {"eval_loss": 2.0})
    if end == "prune":
        tracker.prune_trial(run_id, 20, 1.0)
    else:
        tracker.fail_trial(run_id, FloatingPointError("loss became nan at step 25"))
    assert _steps(tracker, run_id, "eval_loss") == [10, 20]
    tags = MlflowClient(tracker.uri).get_run(run_id).data.tags
    assert tags["lorasweep.state"] == ("PRUNED" if end == "prune" else "FAIL")


def test_a_curve_longer_than_one_mlflow_batch_arrives_whole_with_the_trials_end(tracker, monkeypatch):
    """A fast trial logging every step: more points in CURVE_FLUSH_S than one call to the store
    takes (1000 items, tags included), sent with the final metrics and tags."""
    monkeypatch.setattr(tracking, "CURVE_FLUSH_S", 1e9)
    parent = tracker.parent_run("s", None, {}, "")
    run_id = tracker.start_trial(parent, "s", 0, {}, [])
    for step in range(1, 1001):
        tracker.log_curve(run_id, step, {"loss": 1 / step})
    samples = [{"prompt": "p", "reference": "r", "output": "o"}]
    result = TrialResult(metrics={"eval_loss": 0.05}, adapter_dir=None, samples=samples, steps=1000)
    tracker.finish_trial(run_id, result, 1.0)
    assert _steps(tracker, run_id, "loss") == list(range(1, 1001))
    assert MlflowClient(tracker.uri).get_run(run_id).data.tags["lorasweep.state"] == "COMPLETE"


def test_a_tracking_server_outage_is_one_line_when_it_starts_and_one_when_it_ends(monkeypatch, caplog):
    """MLflow's client retries a server that stopped answering; urllib3 logs each retry. The user
    sees one warning when it stops and one when it answers again, from a call that then succeeds."""
    import http.server
    import re
    import threading
    import time

    from mlflow.utils.rest_utils import MlflowHostCreds, http_request

    from .services import free_port

    port, said = free_port(), []
    monkeypatch.setattr(tracking._OUTAGES, "say", said.append)
    tracking._OUTAGES.watch("127.0.0.1", f"http://127.0.0.1:{port}")

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # http.server's name
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    def come_back() -> None:  # the server is down for the call's first tries, then answers
        time.sleep(1.0)
        server = http.server.HTTPServer(("127.0.0.1", port), Ok)
        servers.append(server)
        server.serve_forever()

    servers: list[http.server.HTTPServer] = []
    threading.Thread(target=come_back, daemon=True).start()
    try:
        response = http_request(
            MlflowHostCreds(f"http://127.0.0.1:{port}"),
            "/health",
            "GET",
            max_retries=5,
            backoff_factor=1,
            backoff_jitter=0,
        )
    finally:
        while not servers:
            time.sleep(0.05)
        servers[0].shutdown()
    assert response.status_code == 200
    assert len(said) == 2, said
    server = f"warning: the MLflow tracking server http://127.0.0.1:{port}"
    assert said[0].startswith(f"{server} is not answering ([Errno 111] Connection refused); MLflow retries ")
    assert said[0].endswith(" min (MLFLOW_HTTP_REQUEST_MAX_RETRIES) while lorasweep waits.")
    assert re.fullmatch(rf"{re.escape(server)} answers again after \d+ s\.", said[1]), said[1]
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]  # urllib3's lines are gone
    # ...and so are those it says at DEBUG while the outage is watched ("Starting new HTTP connection")
    assert not [r for r in caplog.records if r.name.startswith("urllib3") and r.levelname == "DEBUG"]
    assert not tracking._OUTAGES._down and tracking._OUTAGES._level is None


def test_orphan_runs_of_another_study_of_the_same_name_are_left_running(tracker):
    # Two studies named "s" (another storage's study runs beside this one): closing this study's
    # orphans must not close the other's live trial, nor spare this one's own orphan.
    parent = tracker.parent_run("s", None, {}, "")
    mine = tracker.start_trial(parent, "s", 0, {}, [], {"lorasweep.study_id": "a"})
    theirs = tracker.start_trial(parent, "s", 0, {}, [], {"lorasweep.study_id": "b"})
    tracker.close_orphan_trials("s", set, study_id="a")
    client = MlflowClient(tracker.uri)
    assert client.get_run(mine).info.status == "KILLED"
    assert client.get_run(theirs).info.status == "RUNNING"


def test_the_experiment_is_a_classic_one_and_an_older_one_becomes_one_when_opened(stores):
    """MLflow's UI opens a classic experiment on its runs table, a GenAI one on an empty traces view."""
    # Absolute: MLflow caches a store by its URI, so a relative one would reach the next test's folder.
    uri = f"sqlite:///{stores}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    made = Tracker(uri, "fresh")
    assert (
        client.get_experiment(made.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    )
    older = client.create_experiment("older")  # as lorasweep 0.x made it: no kind
    guessed = client.create_experiment("guessed", tags={"mlflow.experimentKind": "genai_development"})
    for name, experiment_id in (("older", older), ("guessed", guessed)):
        assert Tracker(uri, name).experiment_id == experiment_id
        assert (
            client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
        )


def test_a_pruned_trials_run_is_named_pruned_in_the_runs_table(tracker):
    """MLflow has no pruned status (the run is FINISHED as a complete one): its name says it."""
    client = MlflowClient(tracker.uri)
    parent = tracker.parent_run("s", None, {}, "")
    pruned, complete = (tracker.start_trial(parent, "s", n, {}, []) for n in (7, 8))
    tracker.prune_trial(pruned, 20, 1.0)
    tracker.finish_trial(complete, TrialResult(metrics={"eval_loss": 1.0}, adapter_dir=None, steps=30), 1.0)
    assert client.get_run(pruned).info.run_name == "trial-7 (pruned)"
    assert client.get_run(complete).info.run_name == "trial-8"
    # A duplicate of a pruned trial is pruned too; one closed by another process (a worker, resume)
    # is named from its run, and a name already marked is not marked twice.
    other = Tracker(tracker.uri, "batched")
    twin = tracker.start_trial(parent, "s", 9, {}, [])
    other.reuse_trial(twin, 7, pruned, {"eval_loss": 2.0}, "PRUNED")
    other.prune_trial(pruned, 20, 1.0)
    assert [client.get_run(r).info.run_name for r in (twin, pruned)] == [
        "trial-9 (pruned)",
        "trial-7 (pruned)",
    ]


def test_the_ui_address_opens_the_studys_runs_table_in_the_machine_learning_view(tracker):
    parent = tracker.parent_run("s", None, {}, "")
    ui = "http://127.0.0.1:5000"
    assert tracking.runs_page(ui, tracker.uri, parent) == (
        f"{ui}/#/experiments/{tracker.experiment_id}/runs?workflowType=machine_learning"
    )
    assert tracking.runs_page(ui, tracker.uri, None) == f"{ui}/#/experiments?workflowType=machine_learning"
    assert tracking.runs_page(ui, tracker.uri, "0" * 32).endswith(
        "/#/experiments?workflowType=machine_learning"
    )
