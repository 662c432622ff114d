"""The record lorasweep keeps on a study: every key it stores on Optuna's study and trials (user
attributes) and every tag it puts on MLflow runs and model versions, named once, here.

Resume, workers, `trials`, `best` and promotion all read what a sweep wrote; they read it through
`StudyRecord` and `TrialRecord`, and the writers below are the only places that write it. The keys
themselves are a stored format: studies and runs made by earlier versions carry them, so a key
never changes its spelling.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from ._moved import moved
from .errors import StoreError, UserError
from .urls import absolute, redact, tracking_uri

# -- the study's user attributes -----------------------------------------------------------------
SWEEP = "sweep_yaml"  # the sweep file's text: resume and workers run from it
SWEEP_PATH = "sweep_path"  # relative to the working folder where it lies under it (a moved project)
SWEEP_FILE = "sweep_file"  # and absolute: promote or export run from another folder (--storage)
BUDGET = "n_trials"  # finished trials the study ends with
TRACKING = "tracking_uri"  # where its MLflow runs are (password masked)
PARENT_RUN = "mlflow_parent_run_id"
# A uuid made when the study is first run, also tagged on its parent run: a parent run of an earlier
# study of the same name (its storage deleted and the study made again) is never taken for its own.
# Studies made before 0.2 have none until their next run.
STUDY_ID = "study_id"
BASE_METRICS = "base_metrics"
REPORTED = "reported_metric"  # {metric, sign}: what trials report to Optuna while they train
CUSTOM_METRICS = "custom_metrics"  # names of metrics the user's Python functions compute
# ...and where every process imports those functions from: {name: {"path": "module:function",
# "folder": the folder looked in first (relative to the working folder where it lies under it), or
# None for the sweep file's own}}. A function the Python API was given that no other process can
# import (a lambda, a closure, one defined in __main__) has none.
CUSTOM_METRIC_PATHS = "custom_metric_paths"

# -- each trial's user attributes ----------------------------------------------------------------
WORKER = "worker"  # host:pid:start of the process that runs it (set first: a kill is detectable)
RUN_ID = "mlflow_run_id"
SEED = "seed"
METRICS = "metrics"
PRUNED_STEP = "pruned_step"
ERROR = "error"
# Ctrl-C, SIGTERM or a store fault (not the trial's own failure): run again on resume, like a dead
# worker's trial
INTERRUPTED = "interrupted"
DUPLICATE_OF = "duplicate_of"  # the earlier trial with these parameters, whose result it reuses
RETRY_OF = "retry_of"  # the trial it runs again
DIED = "worker died mid-trial"  # the error of a trial failed for its dead worker
# ...and the system attributes of a retry, as Optuna's RetryHeartbeatStaleTrialCallback writes them.
FAILED_TRIAL = "failed_trial"
RETRY_HISTORY = "retry_history"

# -- MLflow tags: the experiment ---------------------------------------------------------------
# MLflow 3's UI opens an experiment by its kind: a GenAI one on its traces overview, a classic one
# ("custom model development") on the runs table, where a sweep's trials are.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CLASSIC_EXPERIMENT = "custom_model_development"

# -- MLflow tags: runs ---------------------------------------------------------------------------
STUDY_TAG = "lorasweep.study"
STUDY_ID_TAG = "lorasweep.study_id"  # on the parent run and each trial's run: the study's STUDY_ID
ROLE_TAG = "lorasweep.role"  # study (the parent run) | trial
TRIAL_TAG = "lorasweep.trial_number"
STATE_TAG = "lorasweep.state"  # the Optuna trial's state: COMPLETE, PRUNED or FAIL
ERROR_TAG = "lorasweep.error"
SAMPLED_TAG = "lorasweep.sampled"  # the parameters the trial sampled (the rest are fixed)
PRUNED_STEP_TAG = "lorasweep.pruned_step"
RETRY_OF_TAG = "lorasweep.retry_of"
DUPLICATE_OF_TAG = "lorasweep.duplicate_of"
DUPLICATE_RUN_TAG = "lorasweep.duplicate_run_id"  # the run that holds a reused result's adapter
BEST_RUN_TAG = "lorasweep.best_run_id"  # on the parent run
PARETO_TAG = "lorasweep.pareto_trials"  # on the parent run
BUNDLE_TAG = "lorasweep.bundle"  # on an adapter bundle's version: its trials, best first: 3,5,7
REGISTERED_TAG = "lorasweep.registered_as"  # on a promoted trial's run: MODEL/VERSION
# What a trial trained, put on its run when its adapter is logged and checked by promote and export
# before they hand it over: one tag per file under adapter/, PREFIX + its index in path order, whose
# value is sha256sum's line "<sha256>  <path>" (a key may hold only letters, digits and _ - . / : and
# space, and a runner of the user's may name its files anything; MLflow caps a tag's value, not the
# number of tags), and the base's identity (objectives.base_identity).
ADAPTER_SHA256_PREFIX = "lorasweep.adapter_sha256."
BASE_TAG = "lorasweep.base"
# -- MLflow tags: model versions -----------------------------------------------------------------
# Where a version came from: the study's STUDY_TAG and STUDY_ID_TAG (a champion of another study is
# not replaced without --force) and its trial's TRIAL_TAG (a bundle's best), then:
GATE_TAG = "lorasweep.gate"  # passed | failed
GATE_FAILURES_TAG = "lorasweep.gate_failures"
PARAM_TAG_PREFIX = "param."  # param.lora_r: the trial's parameters (a bundle's: trial-N.param.lora_r)
METRIC_TAG_PREFIX = "metric."  # metric.eval_loss: its final metrics, likewise
# The gate's evidence, one tag per figure of each model measured (pytorch, fp32, int8, int4, a
# bundle's trial-N): "<model>.<figure>", figure_tag(). Its figures:
SIZE_FIGURE = "size_mb"
LOAD_FIGURE = "load_seconds"
SPEED_FIGURE = "ms_per_token"
PERPLEXITY_FIGURE = "eval_perplexity"
EXPORTER_FIGURE = "exporter"  # exports only, as the next three
PERPLEXITY_CHANGE_FIGURE = "perplexity_change"
LOGIT_DIFF_FIGURE = "max_logit_diff"
GREEDY_FIGURE = "greedy_identical"  # prompts whose greedy tokens equal PyTorch's, "7/8"
ADAPTER_FILE_FIGURE = "file"  # a bundle's adapters only, as the next two
RANK_FIGURE = "rank"
MERGED_SPEED_FIGURE = "merged_ms_per_token"  # the merged export of the same trial, for comparison
BUNDLE_SIZE_TAG = "bundle.size_mb"  # the bundle's files, and the merged exports it replaces
BUNDLE_MERGED_SIZE_TAG = "bundle.merged_size_mb"
# -- MLflow tags: the LoggedModel behind a version, while promote works on it ----------------------
# A promote killed half-way leaves its LoggedModel "started": the next promote of that run completes
# it (version, exports, alias) rather than registering another, or fails it if it never became READY.
PROMOTED_TO_TAG = "lorasweep.promoted_to"  # the registered model's name
PROMOTION_TAG = "lorasweep.promotion"  # started -> done (or failed: a dead promote's PENDING model)
PROMOTER_TAG = "lorasweep.promoter"  # host:pid:start of the promote process
PROMOTION_STARTED, PROMOTION_DONE, PROMOTION_FAILED = "started", "done", "failed"


@dataclass(frozen=True)
class StudyRecord:
    """What lorasweep stored on a study (None where it stored nothing, e.g. a study it did not make)."""

    name: str
    study_id: str | None = None
    sweep_text: str | None = None
    sweep_path: str | None = None
    budget: int | None = None
    tracking_uri: str | None = None
    parent_run_id: str | None = None
    base_metrics: dict[str, float] | None = None  # None: not evaluated yet
    reported: tuple[str, float] | None = None  # (metric, sign)
    custom_metrics: tuple[str, ...] = ()
    # name -> (module:function, the folder looked in first; None: the sweep file's)
    metric_paths: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    @classmethod
    def of(cls, study: optuna.Study) -> StudyRecord:
        attrs = study.user_attrs
        reported = attrs.get(REPORTED)
        return cls(
            name=study.study_name,
            study_id=attrs.get(STUDY_ID),
            sweep_text=attrs.get(SWEEP),
            sweep_path=attrs.get(SWEEP_PATH),
            budget=attrs.get(BUDGET),
            tracking_uri=attrs.get(TRACKING),
            parent_run_id=attrs.get(PARENT_RUN),
            base_metrics=attrs.get(BASE_METRICS),
            reported=(reported["metric"], reported["sign"]) if reported else None,
            custom_metrics=tuple(attrs.get(CUSTOM_METRICS) or ()),
            metric_paths={
                name: (entry["path"], entry.get("folder"))
                for name, entry in (attrs.get(CUSTOM_METRIC_PATHS) or {}).items()
            },
        )


def save_study(
    study: optuna.Study,
    sweep_text: str,
    sweep_path: Path | None,
    custom_metrics: Sequence[str],
    budget: int,
    tracking: str,
    reported: tuple[str, float] | None,
    metric_paths: Mapping[str, tuple[str, str | None]],
) -> None:
    """What a run of a sweep stores on its study: the file (its text, and where it lies: None for
    one given as text), the budget, where MLflow records (never with its password: workers get that
    from their flag or environment), the names of the user's own metrics and where each process
    imports their functions from (name -> (module:function, folder or None))."""
    paths = {
        name: {"path": path, "folder": _portable(Path(folder)) if folder is not None else None}
        for name, (path, folder) in metric_paths.items()
    }
    for key, value in (
        (REPORTED, {"metric": reported[0], "sign": reported[1]} if reported else None),
        (SWEEP, sweep_text),
        (SWEEP_PATH, _portable(sweep_path) if sweep_path else None),
        (SWEEP_FILE, str(sweep_path.resolve()) if sweep_path else None),
        (BUDGET, budget),
        (TRACKING, redact(tracking)),
        (CUSTOM_METRICS, list(custom_metrics)),
        (CUSTOM_METRIC_PATHS, paths),
    ):
        study.set_user_attr(key, value)


def _portable(path: Path) -> str:
    """A path under the working folder is stored relative to it, as the default stores are
    (mlruns/...): a project folder moved or copied then reads its own sweep file's neighbours (the
    data beside it), not the old folder's."""
    full = path.resolve()
    try:
        return str(full.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(full)


def study_id(study: optuna.Study) -> str:
    """The study's id, made and stored the first time it is asked for (a new study, or one made by
    an earlier version)."""
    known = StudyRecord.of(study).study_id
    if known is None:
        known = uuid.uuid4().hex
        study.set_user_attr(STUDY_ID, known)
    return known


def save_parent_run(study: optuna.Study, run_id: str) -> None:
    study.set_user_attr(PARENT_RUN, run_id)


def save_base_metrics(study: optuna.Study, metrics: dict[str, float]) -> None:
    study.set_user_attr(BASE_METRICS, metrics)


def stored_tracking_uri(study: optuna.Study) -> str | None:
    """The tracking URI stored on the study; an earlier version's absolute one into the project
    folder this one was moved or copied from, put back under this folder (_moved)."""
    stored = StudyRecord.of(study)
    found = moved(stored.tracking_uri, stored.parent_run_id)
    return found.uri() if found is not None else stored.tracking_uri


def study_sweep_file(study: optuna.Study) -> Path:
    """Where the study's sweep file was, which anchors its relative data path: as stored relative to
    the working folder where that holds it, else its absolute path (promote or export from another
    folder), an earlier version's absolute path put back under a moved project folder."""
    stored, attrs = StudyRecord.of(study), study.user_attrs
    found = moved(stored.tracking_uri, stored.parent_run_id)
    paths = [Path(p) for p in (stored.sweep_path, attrs.get(SWEEP_FILE)) if p]
    paths = [found.path(p) if found is not None else p for p in paths]
    return next((p for p in paths if p.is_file()), paths[0] if paths else Path(f"{study.study_name}.yaml"))


def study_tracking_uri(study: optuna.Study, flag: str | None) -> str:
    """Where a study's MLflow runs are: the flag, then $MLFLOW_TRACKING_URI, then the URI the study
    was run with (stored, password masked), then the local default."""
    uri = tracking_uri(flag, stored_tracking_uri(study))
    if "***" in uri:
        raise UserError(
            f"the tracking URI must carry its credentials, but study {study.study_name!r} stores "
            f"{uri} (masked). Pass --tracking-uri or set MLFLOW_TRACKING_URI."
        )
    return absolute(uri)


@dataclass(frozen=True)
class TrialRecord:
    """What lorasweep stored on one trial."""

    run_id: str | None = None
    seed: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # final; a pruned trial's last evaluation
    worker: str | None = None
    pruned_step: int | None = None
    error: str | None = None
    interrupted: bool = False
    duplicate_of: int | None = None
    retry_of: int | None = None

    @classmethod
    def of(cls, trial: FrozenTrial | optuna.Trial) -> TrialRecord:
        return cls.from_attrs(trial.user_attrs)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        return cls(
            run_id=attrs.get(RUN_ID),
            seed=attrs.get(SEED),
            metrics=dict(attrs.get(METRICS) or {}),
            worker=attrs.get(WORKER),
            pruned_step=attrs.get(PRUNED_STEP),
            error=attrs.get(ERROR),
            interrupted=bool(attrs.get(INTERRUPTED)),
            duplicate_of=attrs.get(DUPLICATE_OF),
            retry_of=attrs.get(RETRY_OF),
        )

    @property
    def notes(self) -> dict[str, Any]:
        """What is worth a note beside the trial's numbers (its pruning step, retry, reuse, error)."""
        fields = {PRUNED_STEP: self.pruned_step, RETRY_OF: self.retry_of, DUPLICATE_OF: self.duplicate_of}
        return {k: v for k, v in {**fields, ERROR: self.error}.items() if v is not None}


# -- writers, one per moment of a trial's life ---------------------------------------------------
def claim(trial: optuna.Trial, worker: str) -> None:
    trial.set_user_attr(WORKER, worker)


def opened(trial: optuna.Trial, run_id: str, seed: int) -> None:
    trial.set_user_attr(RUN_ID, run_id)
    trial.set_user_attr(SEED, seed)


def scored(trial: optuna.Trial, metrics: dict[str, float]) -> None:
    trial.set_user_attr(METRICS, metrics)


def pruned(trial: optuna.Trial, metrics: dict[str, float], step: int | None) -> None:
    trial.set_user_attr(METRICS, metrics)
    trial.set_user_attr(PRUNED_STEP, step)


def failed(trial: optuna.Trial, error: BaseException) -> None:
    trial.set_user_attr(ERROR, f"{type(error).__name__}: {error}"[:2000])
    if isinstance(error, (KeyboardInterrupt, StoreError)):
        trial.set_user_attr(INTERRUPTED, True)


def reused(trial: optuna.Trial, twin: int, metrics: dict[str, float]) -> None:
    trial.set_user_attr(DUPLICATE_OF, twin)
    trial.set_user_attr(METRICS, metrics)


def died(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    """A trial whose worker died: written through the storage, as Optuna's fail_stale_trials does."""
    storage.set_trial_user_attr(trial_id, ERROR, DIED)


def retried_numbers(trial: FrozenTrial) -> list[int]:
    """The trials this one runs again, first the original (Optuna's retry_history)."""
    return list(trial.system_attrs.get(RETRY_HISTORY, []))


def retry(trial: FrozenTrial) -> optuna.trial.FrozenTrial:
    """A WAITING copy of `trial` that runs it again with the same parameters (and, through retry_of,
    the original's seed); the attempt's own attributes (its run id, its error) are not copied."""
    history = [*retried_numbers(trial), trial.number]
    return optuna.create_trial(
        state=optuna.trial.TrialState.WAITING,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs={RETRY_OF: history[0]},
        system_attrs={**trial.system_attrs, FAILED_TRIAL: history[0], RETRY_HISTORY: history},
    )


def provenance_tags(adapter_sha256: Mapping[str, str], base: str | None) -> dict[str, str]:
    """A trial run's record of what it trained: each adapter file's SHA-256, the base's identity."""
    return Provenance(dict(adapter_sha256), base).version_tags()


@dataclass(frozen=True)
class Provenance:
    """What a trial's run recorded of what it trained; empty for runs logged before the record."""

    adapter_sha256: dict[str, str]  # path under adapter/ -> SHA-256
    base: str | None

    @classmethod
    def of_run(cls, tags: Mapping[str, str], prefix: str = "") -> Provenance:
        """What `version_tags(prefix)` wrote: a run's tags, or a model version's (a LoggedModel's)."""
        files = {}
        for key, value in tags.items():
            if key.startswith(prefix + ADAPTER_SHA256_PREFIX):
                digest, _, path = value.partition("  ")  # sha256sum's line: "<sha256>  <path>"
                files[path] = digest
        return cls(files, tags.get(prefix + BASE_TAG))

    def version_tags(self, prefix: str = "") -> dict[str, str]:
        """The record as tags: on a trial's run, and the same on a model version (a bundle's: per
        adapter, prefix trial-N.)."""
        tags = {
            f"{prefix}{ADAPTER_SHA256_PREFIX}{i}": f"{digest}  {path}"
            for i, (path, digest) in enumerate(sorted(self.adapter_sha256.items()))
        }
        return tags | ({prefix + BASE_TAG: self.base} if self.base else {})


def version_study(version_tags: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(study name, study id) of the study a model version was promoted from (None: not recorded)."""
    return version_tags.get(STUDY_TAG), version_tags.get(STUDY_ID_TAG)


def promotion_tags(name: str, promoter: str) -> dict[str, str]:
    """The bookkeeping tags of a LoggedModel that promote starts to make for the registered model `name`."""
    return {PROMOTED_TO_TAG: name, PROMOTION_TAG: PROMOTION_STARTED, PROMOTER_TAG: promoter}


def origin_tags(study_name: str, study_id: str, trial_number: int) -> dict[str, str]:
    """Where a model version came from: its study (name and id) and trial (a bundle's best)."""
    return {STUDY_TAG: study_name, STUDY_ID_TAG: study_id, TRIAL_TAG: str(trial_number)}


def gate_tags(passed: bool, failures: Sequence[str]) -> dict[str, str]:
    """The gate's verdict on a version, and its reasons when it failed."""
    tags = {GATE_TAG: "passed" if passed else "failed"}
    if not passed:
        tags[GATE_FAILURES_TAG] = "; ".join(failures)[:5000]
    return tags


def trial_tags(params: Mapping[str, Any], metrics: Mapping[str, float], prefix: str = "") -> dict[str, str]:
    """A trial's parameters and final metrics as a version's tags (a bundle's adapter: prefix trial-N.)."""
    tags = {f"{prefix}{PARAM_TAG_PREFIX}{k}": str(v) for k, v in params.items()}
    return tags | {f"{prefix}{METRIC_TAG_PREFIX}{k}": f"{v:.6g}" for k, v in metrics.items()}


def figure_tag(model: str, figure: str) -> str:
    """The tag of one figure the gate measured of one model: fp32.ms_per_token."""
    return f"{model}.{figure}"
