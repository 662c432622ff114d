"""`lorasweep studies` and `delete`: the studies of a storage as things to list and remove."""

from __future__ import annotations

import json

import optuna
from mlflow import MlflowClient
from mlflow.entities import ViewType

from lorasweep.search import RunOptions, load_sweep, run_sweep
from lorasweep.search.cli import main
from lorasweep.search.storage import open_storage

from .test_compare import SWEEP, scored_runner


def _two_studies(write) -> None:
    for name, trials in (("first", 2), ("second", 3)):
        sweep = load_sweep(write(SWEEP.replace("name: cmp", f"name: {name}")))
        run_sweep(sweep, RunOptions(quiet=True, plots=False, n_trials=trials), runner=scored_runner())


def test_studies_lists_each_study_with_its_budget_best_and_parent_run(stores, write, capsys):
    _two_studies(write)
    assert main(["studies", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"first", "second"}
    assert (rows["first"]["finished"], rows["first"]["budget"]) == (2, 2)
    assert (rows["second"]["finished"], rows["second"]["budget"]) == (3, 3)
    assert rows["second"]["best"].startswith("f1=0.") and rows["first"]["parent_run"] == "FINISHED"
    assert rows["first"]["last_activity"] is not None
    assert main(["studies"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["study", "finished", "best", "parent", "run", "last", "activity"]
    assert table[1].startswith("first ") and " 2/2 " in table[1] and "FINISHED" in table[1]


def test_delete_removes_the_study_and_deletes_its_runs_only(stores, write, capsys):
    _two_studies(write)
    client = MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db")

    def runs(study: str, view=ViewType.ACTIVE_ONLY) -> int:
        experiments = [e.experiment_id for e in client.search_experiments()]
        return len(client.search_runs(experiments, f"tags.`lorasweep.study` = '{study}'", run_view_type=view))

    assert (runs("first"), runs("second")) == (3, 4)  # the parent run and one run per trial
    assert main(["delete", "first"]) == 2  # no terminal to ask on, and no --yes
    assert "delete must be confirmed, but got no --yes" in capsys.readouterr().err
    assert runs("first") == 3

    assert main(["delete", "first", "--yes"]) == 0
    assert "deleted study 'first' (2 trials) and its MLflow runs: 3 runs" in capsys.readouterr().out
    assert optuna.get_all_study_names(open_storage(None)) == ["second"]
    assert (runs("first"), runs("first", ViewType.DELETED_ONLY), runs("second")) == (0, 3, 4)  # restorable


def test_studies_of_a_storage_that_does_not_exist_writes_nothing(in_tmp, capsys):
    assert main(["studies"]) == 2
    assert "the study storage must exist" in capsys.readouterr().err
    assert not (in_tmp / "mlruns").exists()
