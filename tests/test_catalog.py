"""`lorasweep studies` and `delete`: the studies of a storage as things to list and remove."""

from __future__ import annotations

import json

import optuna
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

import lorasweep
from lorasweep.search import RunOptions, UserError, load_sweep, run_sweep
from lorasweep.search.cli import main
from lorasweep.search.storage import StudyDeleted, open_storage

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


def _runs_by_status(folder, view=ViewType.ALL) -> dict[str, list[str]]:
    """Every run of the store by its lifecycle: {"active": [status...], "deleted": [status...]}."""
    client = MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    found: dict[str, list[str]] = {"active": [], "deleted": []}
    for run in client.search_runs(experiments, run_view_type=view):
        found[run.info.lifecycle_stage].append(run.info.status)
    return found


def test_delete_acts_on_its_study_only_never_on_an_earlier_one_of_the_same_name(stores, write, capsys):
    """The issue's case: a study's storage moved aside, the same sweep run again (a new study of
    the same name in a new journal, the same MLflow store); delete removes the new one's runs only."""
    sweep = load_sweep(write(SWEEP.replace("name: cmp", "name: tiny")))
    for journal in ("old.journal", "new.journal"):
        options = RunOptions(quiet=True, plots=False, n_trials=3, storage=journal)
        run_sweep(sweep, options, runner=scored_runner())
    assert _runs_by_status(stores)["active"] == ["FINISHED"] * 8

    assert main(["delete", "tiny", "--storage", "new.journal", "--yes"]) == 0
    assert "deleted study 'tiny' (3 trials) and its MLflow runs: 4 runs" in capsys.readouterr().out
    old = optuna.load_study(study_name="tiny", storage=open_storage("old.journal"))
    client = MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db")
    kept = [client.get_run(t.user_attrs["mlflow_run_id"]) for t in old.trials]
    kept.append(client.get_run(old.user_attrs["mlflow_parent_run_id"]))
    assert [r.info.lifecycle_stage for r in kept] == ["active"] * 4
    assert all(r.data.tags["lorasweep.study_id"] == old.user_attrs["study_id"] for r in kept)
    assert len(_runs_by_status(stores)["deleted"]) == 4


def _live_trial(name: str) -> optuna.trial.Trial:
    """A RUNNING trial of the study claimed by this process (alive), as a sweep training it has."""
    from lorasweep.search import record
    from lorasweep.search.recovery import worker_id

    study = optuna.load_study(study_name=name, storage=open_storage(None))
    trial = study.ask()
    record.claim(trial, worker_id())
    return trial


def test_delete_refuses_a_study_with_a_live_trial_unless_forced(stores, write, capsys):
    _two_studies(write)
    trial = _live_trial("first")
    assert main(["delete", "first", "--yes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: a study to delete must have no live trial, but study 'first' has "
        f"trial {trial.number} (worker "
    )
    assert "add --force to delete the study under it" in err and len(err.strip().splitlines()) == 1
    assert main(["delete", "first"]) == 2  # refused before it would ask for a yes
    assert "must have no live trial" in capsys.readouterr().err
    assert "first" in optuna.get_all_study_names(open_storage(None))

    assert main(["delete", "first", "--yes", "--force"]) == 0
    assert optuna.get_all_study_names(open_storage(None)) == ["second"]


def test_a_sweep_whose_study_is_deleted_under_it_stops_in_one_line_with_its_runs_closed(stores, write):
    """`delete --force` while trial 2 trains: the sweep stops with one line, not the storage's
    KeyError or MLflow's "must be in the 'active' state", and no run is left RUNNING."""
    runner = scored_runner()
    script = runner.script

    def deleting(r: int):
        if len(runner.calls) == 3:  # the third trial: delete the study while it "trains"
            lorasweep.delete("gone", force=True)
        return script(r)

    runner.script = deleting
    sweep = load_sweep(write(SWEEP.replace("name: cmp", "name: gone")))
    with pytest.raises(StudyDeleted) as stopped:
        run_sweep(sweep, RunOptions(quiet=True, plots=False), runner=runner)
    assert str(stopped.value) == (
        "the sweep stopped: study 'gone' was deleted while it ran (lorasweep delete --force). Its MLflow "
        "runs are closed; run the same command again to start the study anew."
    )
    runs = _runs_by_status(stores)
    assert runs["active"] == [] and "RUNNING" not in runs["deleted"] and len(runs["deleted"]) == 4


def _registered(client: MlflowClient, study: str, model: str, *aliases: str) -> str:
    """A version of `model` registered from the run of the study's trial 0, holding `aliases`."""
    run_id = (
        optuna.load_study(study_name=study, storage=open_storage(None)).trials[0].user_attrs["mlflow_run_id"]
    )
    client.create_registered_model(model)
    version = client.create_model_version(model, f"runs:/{run_id}/adapter", run_id=run_id).version
    for alias in aliases:
        client.set_registered_model_alias(model, alias, version)
    return run_id


def test_delete_names_the_alias_a_run_holds_and_keeps_it_by_default_or_drops_it(stores, write, capsys):
    _two_studies(write)
    client = MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db")
    kept_run = _registered(client, "first", "tone", "champion")
    dropped_run = _registered(client, "second", "mood", "champion", "staging")

    assert main(["delete", "first", "--yes"]) == 0  # no terminal to ask on: the alias is kept
    out = capsys.readouterr().out
    assert f"run {kept_run} of this study holds models:/tone@champion (version 1, run {kept_run})" in out
    assert (
        f"kept alias models:/tone@champion (version 1, run {kept_run}): it still loads, but its run is "
        "deleted (restorable until mlflow gc); move or drop the alias in the registry"
    ) in out
    version = client.get_model_version_by_alias("tone", "champion")
    assert version.run_id == kept_run and client.get_run(kept_run).info.lifecycle_stage == "deleted"

    assert main(["delete", "second", "--yes", "--drop-alias"]) == 0
    out = capsys.readouterr().out
    for alias in ("champion", "staging"):
        assert (
            f"dropped alias models:/mood@{alias} (version 1, run {dropped_run}): the version remains, as "
            "models:/mood/1, until it is deleted in the registry"
        ) in out
    assert client.get_model_version("mood", "1").aliases == []  # the version itself stays
    assert optuna.get_all_study_names(open_storage(None)) == []


def test_the_api_refuses_an_alias_choice_it_does_not_know_before_deleting_anything(stores, write):
    _two_studies(write)
    with pytest.raises(UserError, match=r"alias must be 'keep' or 'drop', but got alias='dorp'"):
        lorasweep.delete("first", alias="dorp")  # type: ignore[arg-type]
    assert "first" in optuna.get_all_study_names(open_storage(None))


def test_delete_on_a_terminal_names_the_alias_in_its_question_and_asks_which(
    stores, write, capsys, monkeypatch
):
    sweep = load_sweep(write(SWEEP.replace("name: cmp", "name: first")))
    run_sweep(sweep, RunOptions(quiet=True, plots=False, n_trials=2), runner=scored_runner())
    client = MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db")
    run_id = _registered(client, "first", "tone", "champion")
    asked: list[str] = []
    answers = iter(["y", "d"])
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)  # a user at a terminal, answering
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or next(answers))
    assert main(["delete", "first"]) == 0
    alias = f"models:/tone@champion (version 1, run {run_id})"
    assert asked == [
        f"delete study 'first' (2 trials) and its MLflow runs (one of them holds {alias})? [y/N] ",
        "keep the alias (it still loads, its run deleted) or drop it? [K/d] ",
    ]
    assert f"dropped alias {alias}" in capsys.readouterr().out
    assert client.get_model_version("tone", "1").aliases == []
