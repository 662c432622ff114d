"""A project folder moved or copied keeps working: its MLflow store reads and writes the artifacts
beside it, not in the folder it was made in (issue 26, item 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

from lorasweep.objectives import TrialResult
from lorasweep.search import tracking
from lorasweep.search._relocate import relocate
from lorasweep.search.tracking import Tracker

URI = "sqlite:///mlruns/mlflow.db"


def _trial_with_adapter(folder: Path) -> tuple[str, str]:
    """In `folder`: a parent run and one finished trial whose adapter is logged. (parent id, run id)"""
    tracker = Tracker(f"sqlite:///{folder}/mlruns/mlflow.db", "demo")
    parent = tracker.parent_run("demo", None, {}, "study: {name: demo}\n")
    run_id = tracker.start_trial(parent, "demo", 0, {"lora_r": 4}, ["lora_r"])
    adapter = _adapter(folder / "adapter-out", "weights")
    tracker.finish_trial(run_id, TrialResult(metrics={"eval_loss": 1.0}, adapter_dir=adapter), 1.0)
    shutil.rmtree(adapter)
    return parent, run_id


def _adapter(folder: Path, weights: str) -> Path:
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}", encoding="utf-8")
    (folder / "adapter_model.safetensors").write_text(weights, encoding="utf-8")
    return folder


def _store(tmp_path: Path, _empty_mlflow_db: Path) -> Path:
    proj = tmp_path / "proj"
    (proj / "mlruns").mkdir(parents=True)
    shutil.copy(_empty_mlflow_db, proj / "mlruns" / "mlflow.db")
    return proj


def test_a_moved_folder_reads_and_writes_its_own_artifacts(tmp_path, monkeypatch, capsys, _empty_mlflow_db):
    proj = _store(tmp_path, _empty_mlflow_db)
    parent, run_id = _trial_with_adapter(proj)
    capsys.readouterr()
    moved = tmp_path / "proj2"
    proj.rename(moved)
    monkeypatch.chdir(moved)

    client = tracking.client(tracking.absolute(URI))
    note = capsys.readouterr().err
    assert note.strip() == (
        f"note: the MLflow store {moved / 'mlruns' / 'mlflow.db'} was made in another folder; its artifact "
        f"locations under {proj / 'mlruns' / 'artifacts'} now point to {moved / 'mlruns' / 'artifacts'} "
        "(2 runs)."
    )
    got = Path(client.download_artifacts(run_id, "adapter", str(tmp_path)))
    assert (got / "adapter_model.safetensors").read_text(encoding="utf-8") == "weights"
    assert client.get_run(run_id).info.artifact_uri.startswith(moved.as_uri() + "/mlruns/artifacts/demo/")

    # A resumed sweep's new trial writes beside the store, and the old folder is not re-created.
    tracker = Tracker(URI, "demo")
    new = tracker.start_trial(parent, "demo", 1, {"lora_r": 8}, ["lora_r"])
    adapter = _adapter(tmp_path / "adapter-1", "more")
    tracker.finish_trial(new, TrialResult(metrics={"eval_loss": 0.5}, adapter_dir=adapter), 1.0)
    assert (moved / "mlruns" / "artifacts" / "demo" / new / "artifacts" / "adapter").is_dir()
    assert not proj.exists()
    assert relocate(moved / "mlruns" / "mlflow.db") is None  # it points where it is now


def test_a_copy_writes_into_the_copy_and_leaves_the_original_alone(
    tmp_path, monkeypatch, capsys, _empty_mlflow_db
):
    proj = _store(tmp_path, _empty_mlflow_db)
    _, run_id = _trial_with_adapter(proj)
    copy = tmp_path / "copy"
    shutil.copytree(proj, copy)
    monkeypatch.chdir(copy)
    client = tracking.client(tracking.absolute(URI))
    assert "now point to" in capsys.readouterr().err
    assert client.get_run(run_id).info.artifact_uri.startswith(copy.as_uri() + "/")

    assert relocate(proj / "mlruns" / "mlflow.db") is None  # the original points into its own folder
    original = tracking.client(f"sqlite:///{proj}/mlruns/mlflow.db")
    assert original.get_run(run_id).info.artifact_uri.startswith(proj.as_uri() + "/")


def test_artifacts_kept_elsewhere_on_purpose_are_left_alone(tmp_path, monkeypatch, capsys, _empty_mlflow_db):
    """A store whose experiment points into a folder that still exists, with nothing beside the
    store, was laid out that way (a database kept apart from its artifacts)."""
    proj = _store(tmp_path, _empty_mlflow_db)
    _, run_id = _trial_with_adapter(proj)
    apart = tmp_path / "db-only"
    apart.mkdir()
    shutil.copy(proj / "mlruns" / "mlflow.db", apart / "mlflow.db")
    assert relocate(apart / "mlflow.db") is None
    client = tracking.client(f"sqlite:///{apart}/mlflow.db")
    assert client.get_run(run_id).info.artifact_uri.startswith(proj.as_uri() + "/")


def test_resume_after_a_move_records_into_the_moved_store(tmp_path, monkeypatch, capsys, _empty_mlflow_db):
    """The study keeps the default store's URI and its sweep file's path relative through runs and
    resumes, so after `mv proj proj2` it finds the store and the data in proj2, not in a re-created
    proj."""
    from lorasweep.search.cli import main
    from lorasweep.search.record import StudyRecord
    from lorasweep.search.storage import find_study

    from .stubs import Scripted, StubRunner

    monkeypatch.setattr(
        "lorasweep.objectives.Recipe",
        lambda *a, **k: StubRunner(lambda r: Scripted(metrics={"eval_loss": r})),
    )
    proj = _store(tmp_path, _empty_mlflow_db)
    (proj / "rows.jsonl").write_text('{"q": "a", "a": "b"}\n' * 20, encoding="utf-8")
    (proj / "sweep.yaml").write_text(
        "study: {name: moving, n_trials: 1}\nsearch_space:\n  lora_r: {type: choice, values: [2, 4, 8]}\n"
        "data: {path: rows.jsonl, prompt_template: '{q}', response_template: '{a}'}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(proj)
    assert main(["-q", "run", "sweep.yaml"]) == 0
    assert main(["-q", "resume", "moving", "--trials", "2"]) == 0
    moved = tmp_path / "proj2"
    proj.rename(moved)
    monkeypatch.chdir(moved)
    assert main(["-q", "resume", "moving", "--trials", "3"]) == 0
    assert not proj.exists()
    study = find_study("moving", None)
    stored = StudyRecord.of(study)
    assert (stored.tracking_uri, stored.sweep_path) == ("sqlite:///mlruns/mlflow.db", "sweep.yaml")
    client = tracking.client(tracking.absolute(URI))
    runs = client.search_runs([client.get_experiment_by_name("moving").experiment_id])
    assert len(runs) == 4  # the parent and three trials, all in the moved store
    assert all(r.info.artifact_uri.startswith(moved.as_uri() + "/") for r in runs)


def _old_study(tmp_path, monkeypatch, _empty_mlflow_db) -> Path:
    """proj, with a study run there and stored as an earlier version stored it: its MLflow store and
    its sweep file as absolute paths into proj (and no sweep_file)."""
    from lorasweep.search import record
    from lorasweep.search.cli import main
    from lorasweep.search.storage import find_study

    from .stubs import Scripted, StubRunner

    monkeypatch.setattr(
        "lorasweep.objectives.Recipe",
        lambda *a, **k: StubRunner(lambda r: Scripted(metrics={"eval_loss": r})),
    )
    proj = _store(tmp_path, _empty_mlflow_db)
    (proj / "rows.jsonl").write_text('{"q": "a", "a": "b"}\n' * 20, encoding="utf-8")
    (proj / "sweep.yaml").write_text(
        "study: {name: old, n_trials: 1}\nsearch_space:\n  lora_r: {type: choice, values: [2, 4, 8]}\n"
        "data: {path: rows.jsonl, prompt_template: '{q}', response_template: '{a}'}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(proj)
    assert main(["-q", "run", "sweep.yaml"]) == 0
    study = find_study("old", None)
    study.set_user_attr(record.TRACKING, f"sqlite:///{proj}/mlruns/mlflow.db")
    study.set_user_attr(record.SWEEP_PATH, str(proj / "sweep.yaml"))
    study.set_user_attr(record.SWEEP_FILE, None)
    return proj


def _runs(folder: Path) -> int:
    client = tracking.client(f"sqlite:///{folder}/mlruns/mlflow.db")
    return len(client.search_runs([client.get_experiment_by_name("old").experiment_id]))


def test_an_old_study_stored_absolute_follows_its_moved_folder(
    tmp_path, monkeypatch, capsys, _empty_mlflow_db
):
    from lorasweep.search.cli import main
    from lorasweep.search.record import StudyRecord
    from lorasweep.search.storage import find_study

    proj = _old_study(tmp_path, monkeypatch, _empty_mlflow_db)
    moved = tmp_path / "proj2"
    proj.rename(moved)
    monkeypatch.chdir(moved)
    capsys.readouterr()
    assert main(["-q", "resume", "old", "--trials", "2"]) == 0
    assert not proj.exists()  # not made again by a write into the old folder's store
    notes = [
        line for line in capsys.readouterr().err.splitlines() if "another folder than this project" in line
    ]
    assert len(notes) == 1 and str(moved / "mlruns" / "mlflow.db") in notes[0]
    assert _runs(moved) == 3  # the parent and both trials, in the moved store
    stored = StudyRecord.of(find_study("old", None))
    assert stored.tracking_uri == "sqlite:///mlruns/mlflow.db"  # portable from now on


def test_an_old_study_in_a_copied_folder_never_writes_into_the_original(
    tmp_path, monkeypatch, capsys, _empty_mlflow_db
):
    from lorasweep.search.cli import main

    proj = _old_study(tmp_path, monkeypatch, _empty_mlflow_db)
    copy = tmp_path / "copy"
    shutil.copytree(proj, copy)
    monkeypatch.chdir(copy)
    assert main(["-q", "resume", "old", "--trials", "2"]) == 0
    assert (_runs(proj), _runs(copy)) == (2, 3)


def test_a_stranger_store_in_the_working_folder_is_not_taken_for_the_studys(
    tmp_path, _empty_mlflow_db, monkeypatch
):
    """Another project's folder with its own store: the study's runs are not there, so its stored
    store is kept."""
    from lorasweep.search._moved import moved

    other = _store(tmp_path / "other", _empty_mlflow_db)
    monkeypatch.chdir(other)
    assert moved(f"sqlite:///{tmp_path}/proj/mlruns/mlflow.db", "0" * 32) is None


def test_the_sweep_file_is_found_from_another_folder(tmp_path, monkeypatch, _empty_mlflow_db):
    """promote or export with --storage from another folder: the sweep file (and the data beside it)
    by its absolute path, as the relative one does not hold there."""
    from lorasweep.search.cli import main
    from lorasweep.search.storage import find_study
    from lorasweep.search.sweepfile._sweep import stored_sweep

    from .stubs import Scripted, StubRunner

    monkeypatch.setattr(
        "lorasweep.objectives.Recipe",
        lambda *a, **k: StubRunner(lambda r: Scripted(metrics={"eval_loss": r})),
    )
    proj = _store(tmp_path, _empty_mlflow_db)
    (proj / "sweep.yaml").write_text(
        "study: {name: far, n_trials: 1}\nsearch_space:\n  lora_r: {type: choice, values: [2, 4]}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(proj)
    assert main(["-q", "run", "sweep.yaml"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    study = find_study("far", str(proj / "mlruns" / "optuna.journal"))
    assert stored_sweep(study).path == proj / "sweep.yaml"
