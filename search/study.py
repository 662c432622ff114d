"""The Optuna study behind a sweep: storage, sampler, the objective that drives one trial, the loop.

A rerun with the same study name continues the study up to its trial budget: finished trials
count, the MLflow parent run is re-attached (its id is stored on the study).
"""

from __future__ import annotations

import re
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from objectives import Report, TrialResult, TrialSpec, Worker

from . import _names
from ._progress import Progress, best_text
from .errors import UserError
from .sweep import Sweep
from .tracking import Tracker, redact, tracking_uri

DEFAULT_STORAGE = Path("mlruns/optuna.journal")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

# Keys of the study's user attributes: the seams that resume, workers and promotion build on.
SWEEP_ATTR = "sweep_yaml"
PARENT_RUN_ATTR = "mlflow_parent_run_id"
BASE_METRICS_ATTR = "base_metrics"


def _journal_path(url: str | None) -> Path | None:
    if url is None:
        return DEFAULT_STORAGE
    return Path(url.removeprefix("journal:///")) if url.endswith(".journal") else None


def open_storage(url: str | None) -> BaseStorage | str:
    """Any Optuna storage URL; by default a journal file under mlruns/, which several processes on
    one machine can share (SQLite locks up under concurrent writers)."""
    path = _journal_path(url)
    if path is None:
        return url
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def make_sampler(sweep: Sweep) -> optuna.samplers.BaseSampler:
    seed, kind = sweep.study.seed, sweep.study.sampler
    if kind == "grid":
        return optuna.samplers.GridSampler(sweep.space.grid(), seed=seed)
    factories: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "nsgaii": optuna.samplers.NSGAIISampler,
        "gp": optuna.samplers.GPSampler,
    }
    return factories[kind](seed=seed)


def load_study(name: str | None, storage: str | None) -> optuna.Study:
    """An existing study; without a name, the only study in the storage."""
    journal = _journal_path(storage)
    if journal is not None and not journal.exists():
        raise UserError(
            f"the study storage must exist, but got storage={str(journal)!r}. Run a sweep "
            "first (lorasweep run FILE), or pass --storage."
        )
    opened = open_storage(storage)
    names = optuna.get_all_study_names(opened)
    if name is None:
        if len(names) != 1:
            raise UserError(
                f"--study must name a study when the storage holds {len(names)}, but got "
                f"none. Studies: {', '.join(names) or '(none)'}."
            )
        name = names[0]
    if name not in names:
        raise UserError(
            f"--study must name an existing study, but got study={name!r}. "
            f"Studies: {', '.join(names) or '(none)'}."
        )
    return optuna.load_study(study_name=name, storage=opened)


class TrialRunner(Protocol):
    """What the study needs from the trial side; objectives.Worker is the real one."""

    def run_trial(self, trial: TrialSpec, workdir: Path, report: Report | None = None) -> TrialResult: ...

    def evaluate_base(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class RunOptions:
    """What the command line may override on top of the sweep file."""

    n_trials: int | None = None
    study_name: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    quiet: bool = False


def run_sweep(
    sweep: Sweep,
    options: RunOptions = RunOptions(),
    log: Callable[[str], None] = print,
    runner: TrialRunner | None = None,
) -> optuna.Study:
    """Create or continue the study and run trials until its budget of finished trials is met.

    `runner` defaults to an objectives.Worker for the sweep's model and data (tests pass stubs)."""
    name = options.study_name or sweep.study.name
    check_study_name(name)
    budget = options.n_trials or sweep.study.n_trials
    storage_url = options.storage or sweep.study.storage
    study = _existing_study(name, storage_url, sweep)
    done = len(study.get_trials(deepcopy=False, states=FINISHED)) if study else 0
    if study is not None and done >= budget:
        log(
            f"study {name!r} already has {done} finished trials (budget {budget}); nothing to run. "
            f"{best_text(study, sweep.study.metrics)}"
        )
        return study

    # Data and base model before the stores: bad input fails before anything is written.
    if runner is None:
        runner = Worker(sweep.model, sweep.data, sweep.eval, log=None if options.quiet else log)
    if study is None:
        study = optuna.create_study(
            study_name=name,
            storage=open_storage(storage_url),
            sampler=make_sampler(sweep),
            directions=list(sweep.study.directions),
            load_if_exists=True,
        )
        with warnings.catch_warnings():  # "experimental since Optuna 3.2": stable enough for us
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(sweep.study.metrics))
    elif study.user_attrs.get(SWEEP_ATTR) != sweep.text:
        log(f"note: study {name!r} was started from a different sweep file; continuing with this one")
    study.set_user_attr(SWEEP_ATTR, sweep.text)

    uri = tracking_uri(options.tracking_uri, sweep.tracking_uri)
    tracker = Tracker(uri, sweep.experiment or name)
    parent_id = tracker.parent_run(
        name, study.user_attrs.get(PARENT_RUN_ATTR), _study_params(sweep), sweep.text
    )
    study.set_user_attr(PARENT_RUN_ATTR, parent_id)
    if not options.quiet:
        log(
            f"study {name!r}: {done}/{budget} trials done, sampler {sweep.study.sampler}, "
            f"objective {', '.join(f'{m} ({d})' for m, d in zip(sweep.study.metrics, sweep.study.directions))}"
        )
        log(f"mlflow: {redact(uri)} (experiment {sweep.experiment or name!r}, parent run {parent_id})")

    progress = None
    try:
        if BASE_METRICS_ATTR not in study.user_attrs:
            base = runner.evaluate_base()
            study.set_user_attr(BASE_METRICS_ATTR, base)
            tracker.log_base_metrics(parent_id, base)
            if not options.quiet:
                log("base model: " + " ".join(f"{k}={v:.4g}" for k, v in base.items()))
        progress = Progress(sweep.study.metrics, budget, done, options.quiet)
        # A trial that raises fails alone (its MLflow run is closed FAILED with the error) and the
        # sweep goes on: the study's catch, not a try/except hidden in the objective.
        study.optimize(
            _Objective(sweep, runner, tracker, parent_id, name),
            n_trials=budget - done,
            timeout=sweep.study.timeout,
            gc_after_trial=True,
            catch=(Exception,),
            callbacks=[MaxTrialsCallback(budget, states=FINISHED), progress],
        )
    except BaseException as e:
        tracker.fail_study(parent_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if progress is not None:
            progress.close()
    tracker.finish_study(parent_id, *_summary(study, sweep))
    return study


def check_study_name(name: str) -> None:
    # The name lands in MLflow filter strings and file names: keep it to a safe alphabet.
    if not re.fullmatch(r"[\w.-]+", name):
        raise UserError(
            f"a study name must use only letters, digits, '.', '-' and '_', but got name={name!r}."
        )


def _existing_study(name: str, storage_url: str | None, sweep: Sweep) -> optuna.Study | None:
    """The study of that name if it exists, after checking it optimises what the file says.
    A journal file that does not exist yet is not created here."""
    journal = _journal_path(storage_url)
    if journal is not None and not journal.exists():
        return None
    storage = open_storage(storage_url)
    if name not in optuna.get_all_study_names(storage):
        return None
    study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(sweep))
    stored = tuple(study.metric_names or ())
    directions = tuple(d.name.lower() for d in study.directions)
    if (stored and stored != sweep.study.metrics) or directions != sweep.study.directions:
        raise UserError(
            f"a resumed study must keep its objective, but study {name!r} has "
            f"metrics={list(stored)}, directions={list(directions)} and the file says "
            f"metrics={list(sweep.study.metrics)}, directions={list(sweep.study.directions)}. "
            "Use another study name (--study) for a new objective."
        )
    return study


class _Objective:
    """Sample -> open the trial's MLflow run -> train and score through objectives/ -> close."""

    def __init__(
        self, sweep: Sweep, runner: TrialRunner, tracker: Tracker, parent_id: str, study_name: str
    ) -> None:
        self.sweep, self.runner, self.tracker = sweep, runner, tracker
        self.parent_id, self.study_name = parent_id, study_name

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        sampled = self.sweep.space.sample(trial)
        params = self.sweep.space.resolve(sampled, self.sweep.fixed)
        seed = (self.sweep.study.seed or 0) + trial.number  # recorded: a trial can be replayed alone
        spec = TrialSpec(
            training_args={k: v for k, v in params.items() if _names.target_of(k) == "training"},
            lora_args={k: v for k, v in params.items() if _names.target_of(k) == "lora"},
            seed=seed,
        )
        recorded = {**params, "seed": seed, **_setup_params(self.sweep)}
        run_id = self.tracker.start_trial(
            self.parent_id, self.study_name, trial.number, recorded, list(sampled)
        )
        trial.set_user_attr("mlflow_run_id", run_id)
        trial.set_user_attr("seed", seed)
        started = time.monotonic()
        try:
            with tempfile.TemporaryDirectory(prefix=f"lorasweep-trial{trial.number}-") as workdir:
                result = self.runner.run_trial(
                    spec, Path(workdir), report=lambda step, m: self.tracker.log_curve(run_id, step, m)
                )
                trial.set_user_attr("metrics", result.metrics)
                self.tracker.finish_trial(run_id, result, time.monotonic() - started)
        except BaseException as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
            self.tracker.fail_trial(run_id, e)
            raise
        values = tuple(result.metrics[m] for m in self.sweep.study.metrics)
        return values[0] if len(values) == 1 else values


def _setup_params(sweep: Sweep) -> dict[str, Any]:
    """The fixed setup every trial shares, recorded on each run so a run stands on its own."""
    return {
        "model.base": sweep.model.base,
        "model.method": sweep.model.method,
        "model.target_modules": sweep.model.target_modules,
        "data.path": sweep.data.path,
        "data.train_split": sweep.data.train_split,
        "data.eval_split": sweep.data.eval_split,
    }


def _study_params(sweep: Sweep) -> dict[str, Any]:
    space = {f"space.{name}": repr(dist) for name, dist in sweep.space.distributions.items()}
    return {
        **sweep.fixed,
        **_setup_params(sweep),
        **space,
        "study.sampler": sweep.study.sampler,
        "study.seed": sweep.study.seed,
        "study.n_trials": sweep.study.n_trials,
        "study.metrics": ",".join(sweep.study.metrics),
    }


def _summary(study: optuna.Study, sweep: Sweep) -> tuple[dict[str, float], dict[str, str]]:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    summary = {f"n_{s.name.lower()}": float(states.count(s)) for s in set(states)}
    tags: dict[str, str] = {}
    if any(s == TrialState.COMPLETE for s in states):
        if len(sweep.study.metrics) == 1:
            best = study.best_trial
            summary[f"best_{sweep.study.metrics[0]}"] = best.value
            summary["best_trial"] = float(best.number)
            tags["lorasweep.best_run_id"] = best.user_attrs.get("mlflow_run_id", "")
            summary.update({f"best_{k}": v for k, v in best.user_attrs.get("metrics", {}).items()})
        else:
            tags["lorasweep.pareto_trials"] = ",".join(str(t.number) for t in study.best_trials)
    return summary, tags
