"""The studies of a storage, as things a user lists and removes (`lorasweep studies`, `delete`).

A study lives in two stores: its trials in the Optuna storage, its runs in MLflow. Listing reads
both; deleting removes the study from the first and deletes its runs in the second the way MLflow
deletes (marked deleted: `mlflow gc` removes them for good, and until then they can be restored).

A study's run may hold a registered model's version with an alias (`models:/NAME@champion`, or an
alias of the user's). Deleting the run does not delete the version: its model files are the
registry's, so the alias still loads. `delete` says so first and does what the user chose: keep the
alias (the default: whatever loads `models:/NAME@ALIAS` keeps working, on a version whose run is
now deleted) or drop it (the version stays, reachable by its number, until it is deleted in the
registry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import optuna
from optuna.trial import TrialState

from . import tracking
from ._workers import FINISHED
from .errors import UserError
from .progress import objective_names
from .record import STUDY_ID_TAG, StudyRecord, TrialRecord, study_tracking_uri
from .recovery import live_trials
from .selection import choose
from .storage import open_storage, require
from .urls import sqlite_path

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlflow import MlflowClient
    from mlflow.entities import Run


@dataclass(frozen=True)
class StudyRow:
    name: str
    finished: int
    budget: int | None
    best: str  # the best value(s), as `best` names them; "-" before any trial completes
    parent_run: str  # the MLflow parent run's status, or why it is not known
    last_activity: str | None  # when a trial last started or ended (ISO, local time)


def list_studies(storage: str | None) -> list[StudyRow]:
    """Every study of the storage, oldest first, with what its two stores say of it."""
    require(storage)
    opened = open_storage(storage)
    return [
        _row(optuna.load_study(study_name=name, storage=opened))
        for name in optuna.get_all_study_names(opened)
    ]


def _row(study: optuna.Study) -> StudyRow:
    trials = study.get_trials(deepcopy=False)
    moments = [m for t in trials for m in (t.datetime_start, t.datetime_complete) if m is not None]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    names = objective_names(study)
    if not complete:
        best = "-"
    elif len(study.directions) == 1:
        chosen, _ = choose(study, ())  # ties broken as `best` breaks them
        best = f"{names[0]}={chosen.value:.4g} (trial {chosen.number})" if chosen is not None else "-"
    else:
        best = f"pareto front of {len(study.best_trials)}"
    return StudyRow(
        name=study.study_name,
        finished=sum(t.state in FINISHED for t in trials),
        budget=StudyRecord.of(study).budget,
        best=best,
        parent_run=_parent_status(study),
        last_activity=max(moments).isoformat(timespec="seconds") if moments else None,
    )


def _parent_status(study: optuna.Study) -> str:
    from mlflow.exceptions import MlflowException

    record = StudyRecord.of(study)
    if record.parent_run_id is None:
        return "none (not run by lorasweep)"
    try:
        client = _client(study, None)
    except UserError as e:  # a masked password, a server that does not answer: said, not raised
        return f"unknown: {str(e).split(',')[0]}"
    if client is None:
        return "no MLflow store here"
    try:
        return client.get_run(record.parent_run_id).info.status
    except MlflowException:
        return "not in the MLflow store"


AliasChoice = Literal["keep", "drop"]
KEEP_ALIAS: AliasChoice = "keep"  # without a choice: what loads models:/NAME@ALIAS keeps working


@dataclass(frozen=True)
class HeldAlias:
    """A registered model's alias on a version registered from one of the study's runs."""

    model: str
    version: str
    alias: str
    run_id: str

    def __str__(self) -> str:
        return f"models:/{self.model}@{self.alias} (version {self.version}, run {self.run_id})"

    def outcome(self, choice: AliasChoice) -> str:
        """What deleting the study does to it, in a line."""
        if choice == "drop":
            return (
                f"dropped alias {self}: the version remains, as models:/{self.model}/{self.version}, "
                "until it is deleted in the registry"
            )
        return (
            f"kept alias {self}: it still loads, but its run is deleted "
            "(restorable until mlflow gc); move or drop the alias in the registry"
        )


def held_aliases(study: optuna.Study, tracking_uri: str | None) -> list[HeldAlias]:
    """The aliases of registered versions made from the study's runs, by run id."""
    client = _client(study, tracking_uri)
    if client is None:
        return []
    return _aliases(client, [r.info.run_id for r in _runs(study, client)])


def _aliases(client: MlflowClient, run_ids: list[str]) -> list[HeldAlias]:
    from mlflow.exceptions import MlflowException

    held = []
    for start in range(0, len(run_ids), 100):  # a filter of bounded length
        ids = ", ".join(f"'{r}'" for r in run_ids[start : start + 100])
        try:
            versions = client.search_model_versions(f"run_id IN ({ids})")
        except MlflowException:  # a store without a registry
            return []
        for v in versions:
            # The SQL registry's search leaves a version's aliases out: the version itself names them.
            full = client.get_model_version(v.name, v.version)
            held += [HeldAlias(v.name, str(v.version), a, v.run_id or "") for a in full.aliases]
    return sorted(held, key=lambda h: (h.model, int(h.version), h.alias))


def delete_study(
    study: optuna.Study,
    storage: str | None,
    tracking_uri: str | None,
    force: bool = False,
    aliases: AliasChoice = KEEP_ALIAS,
    say: Callable[[str], None] | None = None,
) -> int:
    """Delete the study's MLflow runs, then the study itself. Returns how many runs were deleted.

    The study is this one, by its id, never another study of the same name (one in another storage,
    or an earlier one whose storage was moved aside): its runs are its parent run, the runs tagged
    with its id and the parent's children. A study with a live trial is refused unless `force`; runs
    still RUNNING are closed KILLED first, so a sweep stopped by the deletion leaves none open. The
    runs go before the study: a delete stopped half-way leaves a study that can be deleted again.

    An alias on a version registered from one of its runs is kept or dropped as `aliases` says,
    and `say` is told which, one line each."""
    refuse_live(study, force)
    client = _client(study, tracking_uri)
    runs = [] if client is None else _runs(study, client)
    if client is not None:
        for held in _aliases(client, [r.info.run_id for r in runs]):
            if aliases == "drop":
                client.delete_registered_model_alias(held.model, held.alias)
            if say is not None:
                say(held.outcome(aliases))
        for run in runs:
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, status="KILLED")
            client.delete_run(run.info.run_id)
    optuna.delete_study(study_name=study.study_name, storage=open_storage(storage))
    return len(runs)


def refuse_live(study: optuna.Study, force: bool) -> None:
    """A study with a live trial (_recovery.live_trials) is not deleted unless `force`."""
    live = live_trials(study)
    if live and not force:
        workers = ", ".join(
            f"trial {t.number} (worker {TrialRecord.of(t).worker or 'unnamed'})" for t in live
        )
        raise UserError(
            f"a study to delete must have no live trial, but study {study.study_name!r} has {workers} "
            "running. Wait for its sweep to end or stop it (Ctrl-C), or add --force to delete the study "
            "under it (the sweep then stops, its runs closed)."
        )


def _runs(study: optuna.Study, client: MlflowClient) -> list[Run]:
    """The study's active MLflow runs: its parent run, and in the parent's experiment the runs tagged
    with the study's id and the parent's children (trial runs made before they carried the id)."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    kept = StudyRecord.of(study)
    if kept.parent_run_id is None:
        return []
    try:
        parent = client.get_run(kept.parent_run_id)
    except MlflowException:  # the parent run is gone already: nothing of this study to find
        return []
    filters = [f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'"]
    if kept.study_id is not None:
        filters.append(f"tags.`{STUDY_ID_TAG}` = '{kept.study_id}'")
    found = {parent.info.run_id: parent} if parent.info.lifecycle_stage == "active" else {}
    for where in filters:
        for run in client.search_runs(
            [parent.info.experiment_id], where, run_view_type=ViewType.ACTIVE_ONLY, max_results=50_000
        ):
            found[run.info.run_id] = run
    return list(found.values())


def _client(study: optuna.Study, flag: str | None) -> MlflowClient | None:
    """The study's MLflow store, or None where a local store does not exist (opening one would
    create it: listing and deleting must write nothing there)."""
    uri = study_tracking_uri(study, flag)
    database = sqlite_path(uri)
    if database is not None and not database.exists():
        return None
    return tracking.client(uri)
