"""The two stores of a study, the Optuna storage and the MLflow store, when one of them is lost,
damaged or created twice at once: said in one line, never silently mixed up (issue 17, item 4).
Stub trial runners: no training."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap

import optuna
import pytest
from mlflow import MlflowClient
from optuna.storages.journal import JournalFileBackend

from lorasweep.search import RunOptions, load_sweep, run_sweep
from lorasweep.search.cli import main
from lorasweep.search.storage import open_storage

from .stubs import Scripted, StubRunner

SWEEP = """\
study: {name: stub, metric: f1, sampler: {type: grid, seed: 0}, n_trials: 3}
search_space:
  lora_r: {type: choice, values: [2, 4, 8]}
"""
OPTIONS = RunOptions(quiet=True, plots=False)
PARENT_ATTR = "mlflow_parent_run_id"


def runner() -> StubRunner:
    return StubRunner(lambda r: Scripted(metrics={"eval_loss": 1 / r, "f1": r / 10}), base={"f1": 0.0})


def _client(folder) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")


def _study() -> optuna.Study:
    return optuna.load_study(study_name="stub", storage=open_storage(None))


def _children(folder, parent: str) -> list[str]:
    client = _client(folder)
    experiment = client.get_experiment_by_name("stub")
    runs = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    return sorted(r.data.tags["lorasweep.trial_number"] for r in runs)


def test_a_deleted_mlflow_store_is_one_warning_and_a_new_parent_run(stores, write):
    sweep = load_sweep(write(SWEEP))
    run_sweep(sweep, RunOptions(quiet=True, plots=False, n_trials=1), runner=runner())
    old_parent = _study().user_attrs[PARENT_ATTR]
    (stores / "mlruns" / "mlflow.db").unlink()

    lines: list[str] = []
    study = run_sweep(sweep, OPTIONS, log=lines.append, runner=runner())

    warnings = [line for line in lines if line.startswith("warning")]
    assert len(warnings) == 1, lines
    assert old_parent in warnings[0] and "mlflow.db" in warnings[0] and "new parent run" in warnings[0]
    new_parent = study.user_attrs[PARENT_ATTR]
    assert new_parent != old_parent
    assert _children(stores, new_parent) == ["1", "2"]  # the trials this run made, under the new parent


def test_a_deleted_parent_run_is_one_warning_and_a_new_parent_run(stores, write):
    sweep = load_sweep(write(SWEEP))
    run_sweep(sweep, RunOptions(quiet=True, plots=False, n_trials=1), runner=runner())
    old_parent = _study().user_attrs[PARENT_ATTR]
    _client(stores).delete_run(old_parent)

    lines: list[str] = []
    study = run_sweep(sweep, OPTIONS, log=lines.append, runner=runner())

    warnings = [line for line in lines if line.startswith("warning")]
    assert len(warnings) == 1 and old_parent in warnings[0], lines
    assert study.user_attrs[PARENT_ATTR] != old_parent
    assert _client(stores).get_run(old_parent).info.lifecycle_stage == "deleted"  # left as it was


def test_a_new_study_of_an_old_name_never_reattaches_the_old_parent_run(stores, write):
    """The journal deleted: the study made again under the same name gets its own parent run; the
    old parent keeps its one trial-0 run instead of gaining a second."""
    sweep = load_sweep(write(SWEEP))
    run_sweep(sweep, RunOptions(quiet=True, plots=False, n_trials=1), runner=runner())
    old_parent = _study().user_attrs[PARENT_ATTR]
    (stores / "mlruns" / "optuna.journal").unlink()

    study = run_sweep(sweep, RunOptions(quiet=True, plots=False, n_trials=1), runner=runner())

    new_parent = study.user_attrs[PARENT_ATTR]
    assert new_parent != old_parent
    assert _children(stores, old_parent) == ["0"] and _children(stores, new_parent) == ["0"]
    client = _client(stores)
    assert client.get_run(old_parent).info.status == "FINISHED"
    tag = client.get_run(new_parent).data.tags["lorasweep.study_id"]
    assert tag == study.user_attrs["study_id"] != client.get_run(old_parent).data.tags["lorasweep.study_id"]


def test_a_corrupt_mlflow_store_is_one_message_with_the_fix(stores, write, capsys, monkeypatch):
    monkeypatch.setattr("lorasweep.objectives.Recipe", lambda *a, **k: runner())
    db = stores / "mlruns" / "mlflow.db"
    db.write_bytes(b"this is not a database" * 500)

    assert main(["-q", "run", str(write(SWEEP))]) == 2

    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "the MLflow store must be" in err and "mlflow.db" in err and "file is not a database" in err
    assert "Move it aside" in err


def test_two_processes_creating_fresh_stores_at_once_both_work(tmp_path):
    """MLflow creates its schema with alembic on first use; two processes doing it on one new
    SQLite file race ("table already exists") unless one waits for the other."""
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from lorasweep.search.tracking import Tracker

        folder, me = Path(sys.argv[1]), sys.argv[2]
        (folder / f"ready-{me}").touch()
        while len(list(folder.glob("ready-*"))) < 2:  # both imported: start together
            time.sleep(0.01)
        tracker = Tracker(f"sqlite:///{folder}/mlruns/mlflow.db", "shared")
        print(tracker.parent_run("s" + me, None, {}, ""))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), str(i)],
            cwd=tmp_path,  # mlruns/artifacts lands beside the store, not in the repository
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert out.strip()
    experiment = _client(tmp_path).get_experiment_by_name("shared")
    assert len(_client(tmp_path).search_runs([experiment.experiment_id])) == 2


# -- a store that fails under a running sweep (issue 17, item 3) ---------------------------------
def _full_disk_once(monkeypatch, cls, method: str, when) -> list[int]:
    """`cls.method` raises ENOSPC the first time `when(args)` holds, as a disk that filled up at
    that write would; every other call goes through. Returns the list that counts the faults."""
    original, raised = getattr(cls, method), []

    def faulty(self, *args, **kwargs):
        if not raised and when(args, kwargs):
            raised.append(1)
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, faulty)
    return raised


def _completes(args, kwargs) -> bool:
    """The log_batch that closes a trial's run COMPLETE (Tracker.finish_trial)."""
    tags = kwargs.get("tags") or []
    return any(t.key == "lorasweep.state" and t.value == "COMPLETE" for t in tags)


def _scores(args, kwargs) -> bool:
    """The journal append that stores a trial's final metrics (record.scored)."""
    return any(log.get("user_attr", {}).get("metrics") for log in args[0])


@pytest.mark.parametrize(
    ("cls", "method", "when", "store"),
    [
        (MlflowClient, "log_batch", _completes, "the MLflow store sqlite:///"),
        (JournalFileBackend, "append_logs", _scores, "the study storage "),
    ],
    ids=["mlflow-finish-trial", "journal-append"],
)
def test_a_full_disk_stops_the_sweep_with_one_message_and_the_rerun_continues(
    stores, write, capsys, monkeypatch, cls, method, when, store
):
    monkeypatch.setattr("lorasweep.objectives.Recipe", lambda *a, **k: runner())
    path = str(write(SWEEP))
    original = getattr(cls, method)
    raised = _full_disk_once(monkeypatch, cls, method, when)

    assert main(["-q", "run", path]) == 1

    assert raised == [1]
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert store in err and "No space left on device" in err and "Free space" in err
    study = _study()
    trial = study.trials[-1]
    assert len(study.trials) == 1 and trial.state.name == "FAIL"  # stopped at once, not trial after trial
    client = _client(stores)
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["lorasweep.state"] == "FAIL"
    assert client.get_run(study.user_attrs[PARENT_ATTR]).info.status == "FAILED"

    monkeypatch.setattr(cls, method, original)  # the disk has room again
    assert main(["-q", "run", path]) == 0
    after = _study().trials
    assert [t.state.name for t in after][1:] == ["COMPLETE"] * 3  # the whole grid: none skipped
    retried = [t for t in after if t.user_attrs.get("retry_of") == 0]
    assert len(retried) == 1 and retried[0].params == trial.params  # the faulted trial ran again


def test_a_disk_that_stays_full_is_still_one_message_not_a_cleanup_error(stores, write, capsys, monkeypatch):
    """Once the trial's closing write fails, every later MLflow write fails too (closing the trial's
    run, then the parent's in fail_study): the user still reads the first cause, and the rerun on a
    disk with room closes the trial's run FAIL."""
    monkeypatch.setattr("lorasweep.objectives.Recipe", lambda *a, **k: runner())
    path = str(write(SWEEP))
    full: list[int] = []
    originals = {
        m: getattr(MlflowClient, m) for m in ("log_batch", "set_terminated", "log_text", "update_run")
    }

    def patched(name):
        def call(self, *args, **kwargs):
            if full or (name == "log_batch" and _completes(args, kwargs)):
                full.append(1)
                raise OSError(errno.ENOSPC, "No space left on device")
            return originals[name](self, *args, **kwargs)

        return call

    for name in originals:
        monkeypatch.setattr(MlflowClient, name, patched(name))

    assert main(["-q", "run", path]) == 1

    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "the MLflow store" in err and "No space left on device" in err
    trial = _study().trials[-1]
    assert len(_study().trials) == 1 and trial.state.name == "FAIL"

    for name, original in originals.items():  # room again
        monkeypatch.setattr(MlflowClient, name, original)
    assert main(["-q", "run", path]) == 0
    run = _client(stores).get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status != "RUNNING" and run.data.tags["lorasweep.state"] == "FAIL"
    after = _study().trials
    assert [t.state.name for t in after][1:] == ["COMPLETE"] * 3  # the faulted trial ran again
    assert [t.user_attrs.get("retry_of") for t in after].count(0) == 1
