"""Running a study's trials: `lorasweep run` and `resume` (run_sweep), `lorasweep worker`
(join_sweep), and the one setup both go through.

A rerun with the same study name continues the study up to its trial budget: finished (complete
or pruned) trials count, the MLflow parent run is re-attached (its id is stored on the study), and
trials whose worker died are failed, their MLflow runs closed, and run again (`study.retries`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import cast

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from lorasweep.objectives import (
    BATCH_SIZE,
    METRICS,
    BaseFootprint,
    MetricFn,
    MetricSource,
    TrialRunner,
    importable_source,
    why_not_importable,
)

from . import _base_scores, _lr_range, _warm_start, parent, record
from ._interrupts import first_only
from ._machine import (
    Machine,
    WorkerChoice,
    choose_workers,
    largest_workers,
    this_machine,
    too_many_workers,
    worker_cost,
)
from ._workers import FINISHED, _visible_gpus, exhausted, run_pool, work
from .choices import DEFAULT_MAX_FAILURES, PROGRESS_MODES
from .errors import UserError, store_error
from .failures import FailureLimit, check_pool, timed_out
from .objective import Objective, reported_metric
from .progress import Progress, best_text
from .record import StudyRecord
from .recovery import Recovery, worker_id
from .storage import DEFAULT_STORAGE, find_study, open_storage, require_stored, still_stored
from .strategy import build_pruner, make_sampler
from .sweepfile import Sweep, alpha_tie, describe, name_problem, stored_alpha_tie, stored_sweep
from .tracking import Tracker
from .urls import is_local, redact, tracking_uri

AUTO = "auto"  # --workers auto: the default


def _pool_asked(options: RunOptions) -> bool:
    """Whether several workers were asked for by number (auto decides later, and only for what can
    run them)."""
    return isinstance(options.workers, int) and options.workers > 1


@dataclass(frozen=True)
class RunOptions:
    """What the command line may override on top of the sweep file."""

    n_trials: int | None = None
    study_name: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    quiet: bool = False
    max_failures: int = DEFAULT_MAX_FAILURES  # failed trials in one run before the sweep stops
    # Local worker processes; 1 runs the trials in this process; "auto" chooses for this machine and
    # the base (_machine.choose_workers) once the base is loaded.
    workers: int | str = AUTO
    plots: bool = True  # the study's plots on the parent run at the end (a few seconds)
    # The Python API's custom metrics, name -> fn(outputs, references). A module-level function goes
    # to other processes by its import path (module:function); any other callable (a lambda, a
    # closure, a function of __main__) runs in this process only, so with workers=1.
    metrics: Mapping[str, MetricFn] = field(default_factory=dict)
    system_metrics: bool = True  # MLflow's CPU/memory/GPU samples on each trial's run
    # How trials show while they run (progress.py: auto, bar, lines, none); quiet shows none.
    progress: str = "auto"
    force: bool = False  # start `workers` even beyond what fits this machine (_machine)

    def __post_init__(self) -> None:
        if isinstance(self.workers, str) and self.workers != AUTO:
            raise UserError(
                f"--workers must be a positive integer or auto, but got workers={self.workers!r}."
            )
        for flag in ("n_trials", "max_failures", "workers"):
            value = getattr(self, flag)
            if value is not None and value != AUTO and value < 1:
                name = "trials" if flag == "n_trials" else flag
                raise UserError(
                    f"--{name.replace('_', '-')} must be a positive integer, but got {name}={value}."
                )
        if self.progress not in PROGRESS_MODES:
            raise UserError(
                f"progress must be one of {', '.join(PROGRESS_MODES)}, but got progress={self.progress!r}. "
                "auto shows a bar in a notebook or on a terminal, lines in a log."
            )


@dataclass(frozen=True)
class _Target:
    """Where a `run` goes: the study's name, its budget of finished trials, the study storage and
    the MLflow store (the flags over the sweep file)."""

    name: str
    budget: int
    storage_url: str | None
    uri: str

    @classmethod
    def of(cls, sweep: Sweep, options: RunOptions) -> _Target:
        return cls(
            name=options.study_name or sweep.study.name,
            budget=options.n_trials or sweep.study.n_trials,
            storage_url=options.storage or sweep.study.storage,
            uri=tracking_uri(options.tracking_uri, sweep.tracking_uri),
        )


@first_only()
def run_sweep(
    sweep: Sweep,
    options: RunOptions = RunOptions(),
    log: Callable[[str], None] = print,
    runner: TrialRunner | None = None,
) -> optuna.Study:
    """Create or continue the study and run trials until it holds its budget of finished trials.

    Raises SweepStopped when `options.max_failures` trials fail in this run. `runner` defaults to
    the trial side's Recipe for the sweep's model and data (tests pass stubs)."""
    target = _Target.of(sweep, options)
    # Everything that can be refused is refused before anything is written.
    _check_run(sweep, options, target)
    existing = _existing_study(target.name, target.storage_url, sweep)
    sweep, sources = metric_sources(sweep, options, StudyRecord.of(existing) if existing else None)
    check_custom_metrics(sweep, options, target.name, sources)
    if existing is None and sweep.experiment is not None and is_local(target.uri):
        # A local store makes the experiment a folder; load_sweep could not see a --tracking-uri flag.
        check_study_name(sweep.experiment, "tracking.experiment")
    earlier = _warm_start_source(sweep, target, existing)
    done = len(existing.get_trials(deepcopy=False, states=FINISHED)) if existing else 0
    if existing is not None and done >= target.budget:
        return _nothing_to_run(existing, sweep, target, done, options, log)

    session = _Session.open(
        sweep, target.name, target.storage_url, target.uri, options, log, runner, sources, create=True
    )
    first = len(session.study.get_trials(deepcopy=False))  # trials numbered from here on are this run's
    choice = _auto_workers(session, options, target.storage_url, target.budget - done, ours=runner is None)
    if choice is not None:
        options = dataclasses.replace(options, workers=choice.workers)
    parent_id = _record_start(session, target, sources, new=existing is None, log=log)
    recovered = session.recovery.recover(session.study)
    if not options.quiet:  # a runner handed in (tests) runs here: no choice was made
        _say_start(session, target, done, parent_id, recovered, choice if runner is None else None, log)

    failures = FailureLimit(options.max_failures)
    ended = _run_or_close(
        session, options, target, parent_id, failures, earlier, done, log, ours=runner is None
    )
    _finish(session, target, parent_id, failures, ended, first, options, log)
    return session.study


def _check_run(sweep: Sweep, options: RunOptions, target: _Target) -> None:
    """What the sweep file and the flags must agree on before any store is opened."""
    check_study_name(target.name)
    if _pool_asked(options) and target.storage_url and target.storage_url.startswith("sqlite"):
        raise UserError(
            "--workers above 1 needs a study storage that several processes can write at once, but "
            f"got storage={redact(target.storage_url)} (SQLite locks up under concurrent writers). Use "
            "the default journal (mlruns/optuna.journal), a file ending in .journal, or postgresql://."
        )


def _warm_start_source(sweep: Sweep, target: _Target, existing: optuna.Study | None) -> optuna.Study | None:
    """study.warm_start's earlier study, found before anything is written; None when the file names
    none, or when this study has trials of its own already (it started warm, or never will)."""
    if sweep.study.warm_start is None or (existing is not None and existing.get_trials(deepcopy=False)):
        return None
    if sweep.study.warm_start == target.name:
        raise UserError(
            f"study.warm_start must name another study, but got warm_start={target.name!r}, the study "
            "this run continues (--study). Name an earlier study, or remove warm_start."
        )
    return _warm_start.earlier_study(sweep, target.storage_url)


def _nothing_to_run(
    study: optuna.Study,
    sweep: Sweep,
    target: _Target,
    done: int,
    options: RunOptions,
    log: Callable[[str], None],
) -> optuna.Study:
    """The study holds its budget already: it is tidied (a dead worker's trial must not stay
    RUNNING, nor its MLflow run; a parent run an interrupted run left open is closed) and said so."""
    tracker = Tracker(target.uri, sweep.experiment or target.name)
    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        Recovery(tracker, retries=0).recover(study)
    parent.close_if_left_open(study, tracker, sweep, plots=options.plots, log=log)
    log(
        f"study {target.name!r} already has {done} finished trials (budget {target.budget}); nothing to "
        f"run. {best_text(study, sweep.study.metrics)}"
    )
    return study


def _record_start(
    session: _Session,
    target: _Target,
    sources: Mapping[str, MetricSource],
    *,
    new: bool,
    log: Callable[[str], None],
) -> str:
    """The study's record of this run (its metric names, where their functions import from, sweep
    file, budget and MLflow store) and its MLflow parent run, opened or re-attached. Returns the
    parent run's id."""
    study, sweep = session.study, session.sweep
    if new:
        with warnings.catch_warnings():  # "experimental since Optuna 3.2": stable enough for us
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(sweep.study.metrics))
    elif StudyRecord.of(study).sweep_text != sweep.text:
        log(f"note: study {target.name!r} was started from a different sweep file; continuing with this one")
    record.save_study(
        study,
        sweep.text,
        sweep.path,
        sweep.custom_metrics,
        target.budget,
        target.uri,
        reported_metric(sweep),
        {name: (s.path, s.folder) for name, s in sources.items()},
    )
    parent_id = session.tracker.parent_run(
        target.name,
        StudyRecord.of(study).parent_run_id,
        parent.study_params(sweep),
        sweep.text,
        study_id=record.study_id(study),
        warn=log,
    )
    record.save_parent_run(study, parent_id)
    return parent_id


def _say_start(
    session: _Session,
    target: _Target,
    done: int,
    parent_id: str,
    recovered: list[int],
    choice: WorkerChoice | None,
    log: Callable[[str], None],
) -> None:
    study = session.sweep.study
    objective = ", ".join(f"{m} ({d})" for m, d in zip(study.metrics, study.directions, strict=True))
    log(
        f"study {target.name!r}: {done}/{target.budget} trials done, sampler {study.sampler}, "
        f"pruner {study.pruner['type'] if study.pruner else 'none'}, objective {objective}"
    )
    experiment = session.sweep.experiment or target.name
    log(f"mlflow: {redact(target.uri)} (experiment {experiment!r}, parent run {parent_id})")
    if choice is not None:
        log(choice.line())
    if recovered:
        log(f"recovered: trial {', '.join(map(str, recovered))} did not finish (worker stopped); see retries")


def _run_or_close(
    session: _Session,
    options: RunOptions,
    target: _Target,
    parent_id: str,
    failures: FailureLimit,
    earlier: optuna.Study | None,
    done: int,
    log: Callable[[str], None],
    *,
    ours: bool,
) -> str:
    """What runs before the trials (the learning-rate range test, the warm start, the base model's
    scores), then the trials, here or in a pool. Whatever stops them early closes the parent run
    (KILLED on Ctrl-C, else FAILED) and is raised. Returns why the trials ended (work's reasons)."""
    try:
        _before_trials(session, options, parent_id, earlier, target.budget, log, ours=ours)
        if isinstance(options.workers, int) and options.workers > 1:  # "auto" is a number by now
            return _run_pool(
                session, options.workers, options, target.storage_url, failures, done, target.budget, log
            )
        return session.run_trials(parent_id, failures, done, target.budget, options)
    except BaseException as e:
        _stop_if_deleted(session.study, session.tracker, parent_id)
        try:
            session.tracker.fail_study(parent_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        except Exception as cleanup:
            if store_error(cleanup, "") is None:
                raise
        raise


def _before_trials(
    session: _Session,
    options: RunOptions,
    parent_id: str,
    earlier: optuna.Study | None,
    budget: int,
    log: Callable[[str], None],
    *,
    ours: bool,
) -> None:
    """What the trials start from: the learning-rate range test's narrowed space (measured once,
    applied again on every later run), the warm start's trials (enqueued into an empty study) and
    the base model's scores (once per study)."""
    study, tracker = session.study, session.tracker
    say = (lambda _: None) if options.quiet else log
    if session.sweep.study.lr_range_test or _lr_range.recorded(study) is not None:
        session.sweep = _lr_range.apply(
            study,
            session.sweep,
            session.runner,
            say,
            lambda tags: tracker.log_study_tags(parent_id, tags),
        )
        # lorasweep's sampler draws from the space it was built with: the narrowed one from now on
        study.sampler = make_sampler(session.sweep.study, session.sweep.space)
    if earlier is not None and not study.get_trials(deepcopy=False):
        _warm_start.enqueue(study, earlier, session.sweep, budget, say)
    if StudyRecord.of(study).base_metrics is None:
        base = _base_scores_of(session, options, ours=ours)
        record.save_base_metrics(study, base)
        tracker.log_base_metrics(parent_id, base)
        say("base model: " + " ".join(f"{k}={v:.4g}" for k, v in base.items()))


def _finish(
    session: _Session,
    target: _Target,
    parent_id: str,
    failures: FailureLimit,
    ended: str,
    first: int,
    options: RunOptions,
    log: Callable[[str], None],
) -> None:
    """Why the sweep ended short of its budget, if it did; the parent run's summary and plots; and
    SweepStopped when failures stopped it."""
    study, sweep = session.study, session.sweep
    _say_if_exhausted(study, sweep, target.budget, log)
    _say_if_timed_out(study, sweep, target.budget, ended, log, first)
    status = "FAILED" if failures.tripped else "FINISHED"
    parent.finish(study, session.tracker, parent_id, sweep, plots=options.plots, log=log, status=status)
    failures.raise_if_tripped(study, target.budget)


@first_only()
def join_sweep(
    study: optuna.Study,
    storage: str | None,
    options: RunOptions = RunOptions(),
    log: Callable[[str], None] = print,
    runner: TrialRunner | None = None,
) -> optuna.Study:
    """Run trials of a study that `lorasweep run` started, from this process (`lorasweep worker`,
    on this machine or another): with the sweep file, budget, MLflow store and parent run stored on
    the study. Returns once the study holds its budget of finished trials; the run that started the
    study writes the summary and the plots on the parent run.

    Raises SweepStopped when `options.max_failures` trials fail in this process."""
    sweep = _lr_range.with_recorded_range(study, stored_sweep(study))  # the range its trials sample
    name = study.study_name
    parent_id = StudyRecord.of(study).parent_run_id
    if parent_id is None:
        raise UserError(
            f"a study to join must have its MLflow parent run, but study {name!r} has none yet. "
            f"Start it with lorasweep run FILE --study {name}, then start workers."
        )
    sweep, sources = metric_sources(sweep, options, StudyRecord.of(study))
    check_custom_metrics(sweep, options, name, sources)
    uri = record.study_tracking_uri(study, options.tracking_uri)
    session = _Session.open(sweep, name, storage, uri, options, log, runner, sources, create=False)
    study = session.study
    first = len(study.get_trials(deepcopy=False))  # trials numbered from here on are this run's
    session.recovery.recover(study)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    budget = StudyRecord.of(study).budget or sweep.study.n_trials
    if not options.quiet:
        log(f"worker {worker_id()} joins study {name!r}: {done}/{budget} trials done")
    failures = FailureLimit(options.max_failures)
    try:
        ended = session.run_trials(parent_id, failures, done, budget, options)
    except BaseException:
        _stop_if_deleted(study, session.tracker, parent_id)
        raise
    _say_if_timed_out(study, sweep, budget, ended, log, first)
    failures.raise_if_tripped(study, budget)
    return study


def _stop_if_deleted(study: optuna.Study, tracker: Tracker, parent_id: str) -> None:
    """A study deleted under the sweep: that is what the user is told, in one line, rather than the
    error its storage or MLflow raised at the next write. Its runs are closed (delete --force closed
    them already; a deletion by other means did not)."""
    if still_stored(study):
        return
    with contextlib.suppress(Exception):
        if tracker.run_status(parent_id) == "RUNNING":
            tracker.fail_study(parent_id, "KILLED")
    require_stored(study)


def _say_if_exhausted(study: optuna.Study, sweep: Sweep, budget: int, log: Callable[[str], None]) -> None:
    """The workers stopped short of the budget because no configuration is left: one line, and the
    run ends as a finished one (the same command says so again rather than train a duplicate)."""
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    if finished < budget and exhausted(study):
        log(
            f"the search space is exhausted: each of its {sweep.space.size()} configurations has run or "
            f"is running; stopping at {finished}/{budget} finished trials"
        )


def _say_if_timed_out(
    study: optuna.Study, sweep: Sweep, budget: int, ended: str, log: Callable[[str], None], first: int
) -> None:
    """The study's timeout ended the sweep short of its budget: one line, naming the trial it
    stopped (recorded as interrupted: the next run runs it again). Only a trial numbered `first` or
    later is this run's: an earlier run's timed-out trial is not named when this run's timeout fell
    between trials."""
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    if ended != "timeout" or finished >= budget:
        return
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in record.retried_numbers(t)}
    # This run's: the last trial the timeout stopped, unless a later trial runs it again already.
    stopped = [t for t in trials if t.number >= first and timed_out(t)][-1:]
    said = ""
    if stopped and stopped[0].number not in retried:
        attempts = len(record.retried_numbers(stopped[0])) + 1  # Recovery retries up to study.retries
        again = (
            "runs again on the next run"
            if attempts <= sweep.study.retries
            else f"is not run again (study.retries: {sweep.study.retries})"
        )
        said = f"; trial {stopped[0].number} was stopped at the deadline and {again}"
    log(
        f"the study's timeout ({sweep.study.timeout:g} s) ended the sweep at {finished}/{budget} "
        f"finished trials{said}"
    )


def check_study_name(name: str, what: str = "a study name") -> None:
    """The name lands in MLflow filter strings and file names: a safe alphabet, one folder's name,
    short enough for a file name (the sweep file's study.name and tracking.experiment obey the same)."""
    wrong = name_problem(what, name)
    if wrong is not None:
        raise UserError(wrong)


def metric_sources(
    sweep: Sweep, options: RunOptions, stored: StudyRecord | None
) -> tuple[Sweep, dict[str, MetricSource]]:
    """Where every process of this run imports each custom metric's function from: what the study
    recorded, then the sweep file's eval.metrics (beside the file: folder None), then the Python
    API's module-level functions (a function no other process can import has no source). Returns
    the sweep with every metric that has a path in its eval.metrics (the runs show them) and the
    sources."""
    sources = {
        name: MetricSource(path, folder)
        for name, (path, folder) in (stored.metric_paths if stored else {}).items()
        if name in sweep.custom_metrics
    }
    sources.update({name: MetricSource(path) for name, path in sweep.eval.metric_paths().items()})
    for name, fn in options.metrics.items():
        found = importable_source(fn)
        if found is None:
            sources.pop(name, None)
        else:
            sources[name] = found
    shown = {**{n: s.path for n, s in sources.items()}, **sweep.eval.metrics}
    if shown != sweep.eval.metrics:
        sweep = dataclasses.replace(sweep, eval=sweep.eval.model_copy(update={"metrics": shown}))
    return sweep, sources


def check_custom_metrics(
    sweep: Sweep, options: RunOptions, name: str, sources: Mapping[str, MetricSource]
) -> None:
    """Every custom metric the study records needs its function in this run: given by the Python
    API, or imported by path. A function only this process has keeps the trials here."""
    clashing = sorted(set(options.metrics) & set(METRICS))
    if clashing:
        raise UserError(
            f"a custom metric must not take a built-in metric's name, but got metrics={clashing}. "
            "Rename it (e.g. my_f1)."
        )
    missing = [m for m in sweep.custom_metrics if m not in options.metrics and m not in sources]
    if missing:
        raise UserError(
            f"a study with custom metrics needs their functions, but study {name!r} records "
            f"{', '.join(missing)}, computed by Python functions that this run was not given. Continue "
            f"it from Python: lorasweep.resume({name!r}, metrics={{{missing[0]!r}: fn, ...}}), or name "
            "the function in the sweep file: eval: {metrics: {NAME: module:function}}."
        )
    stuck = {m: fn for m, fn in options.metrics.items() if m not in sources}
    if stuck and _pool_asked(options):
        metric, fn = next(iter(stuck.items()))
        raise UserError(
            f"a custom metric must be importable by the worker processes, but got workers={options.workers} "
            f"with metrics[{metric!r}]: {why_not_importable(fn)}. Define the function in a module (a .py "
            "file beside the sweep file or an installed one) and pass it from there, name it in the sweep "
            "file (eval: {metrics: {NAME: module:function}}), or use workers=1."
        )


def _metric_functions(
    sweep: Sweep, options: RunOptions, sources: Mapping[str, MetricSource]
) -> dict[str, MetricFn]:
    """The custom metrics' functions in this process: the API's own objects, the rest imported by
    path (an InputError, in the project's grammar, where one cannot be)."""
    folder = sweep.path.parent if sweep.path is not None else None
    functions = dict(options.metrics)
    for name, source in sources.items():
        if name not in functions:
            # a path from the sweep file is checked as validate checks it; a function that the API
            # was once given is taken as it was then
            functions[name] = source.load(name, folder, check_signature=source.folder is None)
    return functions


@dataclass
class _Session:
    """What every process that runs trials of a study sets up, in this order: the trial runner (the
    data and the base model first, so bad input fails before anything is written), the MLflow
    tracker, the recovery of dead workers' trials, and the study opened with the sweep's sampler
    and pruner."""

    sweep: Sweep
    runner: TrialRunner
    tracker: Tracker
    recovery: Recovery
    study: optuna.Study

    @classmethod
    def open(
        cls,
        sweep: Sweep,
        name: str,
        storage_url: str | None,
        uri: str,
        options: RunOptions,
        log: Callable[[str], None],
        runner: TrialRunner | None,
        sources: Mapping[str, MetricSource],
        *,
        create: bool,
    ) -> _Session:
        trial_runner = runner if runner is not None else _recipe(sweep, options, log, sources)
        _check_fits(sweep, trial_runner, options, log)
        tracker = Tracker(uri, sweep.experiment or name)
        recovery = Recovery(tracker, sweep.study.retries)
        study = _open_study(sweep, name, open_storage(storage_url, on_stale=recovery), create=create)
        return cls(sweep, trial_runner, tracker, recovery, study)

    def run_trials(
        self, parent_id: str, failures: FailureLimit, done: int, budget: int, options: RunOptions
    ) -> str:
        """Trials in this process until the study holds its budget (_workers.work: exact with any
        number of workers). A trial that raises fails alone (its MLflow run is closed FAILED with the
        error) and the sweep goes on: the study's catch, not a try/except hidden in the objective.
        The study's timeout counts from here, and stops a trial that runs past it. Returns why the
        trials ended (work's reasons)."""
        study, sweep = self.study, self.sweep
        timeout = sweep.study.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        progress = Progress(sweep.study.metrics, budget, done, "none" if options.quiet else options.progress)
        objective = Objective(
            sweep,
            self.runner,
            self.tracker,
            parent_id,
            study.study_name,
            on_step=progress.trial_step,
            system_metrics=options.system_metrics,
            study_id=StudyRecord.of(study).study_id,
            deadline=deadline,
        )
        try:
            ended = work(
                study,
                objective,
                budget=lambda: StudyRecord.of(study).budget or budget,  # raised by a later run's --trials
                callbacks=[progress, failures],
                recover=self.recovery.fail_dead,
                stop=lambda: failures.tripped or objective.fault is not None,
                deadline=deadline,
                log=progress.note,
            )
        finally:
            progress.close()
        if objective.fault is not None:
            raise objective.fault
        return ended


def _recipe(
    sweep: Sweep, options: RunOptions, log: Callable[[str], None], sources: Mapping[str, MetricSource]
) -> TrialRunner:
    """The trial side's runner: the custom metrics' functions, the data and the base model loaded
    first, so that bad input fails before anything is written."""
    from lorasweep.objectives import Recipe  # torch and transformers: only where trials run

    metrics = _metric_functions(sweep, options, sources)
    if not options.quiet:
        log(f"loading the data ({sweep.data.path}) and the base model ({sweep.model.base})")
    recipe = Recipe(sweep.model, sweep.data, sweep.eval, None if options.quiet else log, metrics)
    # A TrialRunner: the Recipe always knows its footprint, which the protocol (whose attributes are
    # writable, so mypy holds them invariant) allows to be None. Only read here.
    return cast(TrialRunner, recipe)


def _check_fits(sweep: Sweep, runner: TrialRunner, options: RunOptions, log: Callable[[str], None]) -> None:
    """The batch against the training rows, and `--workers N` against this machine."""
    sweep.check_batch_fits(runner.train_rows)
    if isinstance(options.workers, int) and options.workers > 1:
        _check_workers(sweep, runner, options.workers, options.force, log)


def _open_study(
    sweep: Sweep, name: str, storage: optuna.storages.BaseStorage | str, *, create: bool
) -> optuna.Study:
    """The study with the sweep's sampler and pruner: created (or continued) by `run`, joined by a
    worker."""
    sampler, pruner = make_sampler(sweep.study, sweep.space), build_pruner(sweep.study.pruner)
    if create:
        return optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            directions=list(sweep.study.directions),
            load_if_exists=True,
        )
    # Reseeded, as Optuna does for n_jobs > 1: the grid picks among its free points at random once
    # trial numbers pass its size. Other samplers draw each trial from a stream of its own (seed,
    # trial number) and ignore this. (A trial trains with seed + number.)
    sampler.reseed_rng()
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


def _run_pool(
    session: _Session,
    workers: int,
    options: RunOptions,
    storage_url: str | None,
    failures: FailureLimit,
    done: int,
    budget: int,
    log: Callable[[str], None],
) -> str:
    """`--workers N`: N local worker processes run the trials; this process only watches. Returns
    why they ended ("timeout" or "budget", as work's reasons)."""
    study = session.study
    # Each worker loads its own model: this process lets go of its copy before they start.
    session.runner = None  # type: ignore[assignment]
    gc.unfreeze()  # the Recipe froze what it loaded: out of the collector's sight otherwise
    gc.collect()
    progress = Progress(
        session.sweep.study.metrics, budget, done, "none" if options.quiet else options.progress
    )

    def on_trial(trial: optuna.trial.FrozenTrial) -> None:
        progress(study, trial)
        failures.count(trial)

    try:
        problems = run_pool(
            study,
            workers,
            storage=storage_url or str(DEFAULT_STORAGE.resolve()),
            tracking_uri=session.tracker.uri,
            max_failures=options.max_failures,
            system_metrics=options.system_metrics,
            on_trial=on_trial,
            stop=lambda: failures.tripped,
        )
    finally:
        progress.close()
    session.recovery.fail_dead(study)  # a worker that was killed: its trial is failed and queued
    check_pool(study, problems, failures, log)
    # Each worker's timeout ran from its own start; short of the budget, with no failure, it ended them.
    timed = session.sweep.study.timeout is not None and not failures.tripped and not exhausted(study)
    return "timeout" if timed else "budget"


def _base_scores_of(session: _Session, options: RunOptions, *, ours: bool) -> dict[str, float]:
    """The base model's scores: from the cache of an earlier study on the same base and data
    (_base_scores), else evaluated (and kept there). Only for the trial side's own Recipe without
    custom metrics: a runner handed in, or a Python function, may score anything."""
    footprint = session.runner.footprint if ours and not session.sweep.custom_metrics else None
    key = _base_scores.key(session.sweep, footprint.device) if footprint is not None else None
    known = _base_scores.recall(key) if key is not None else None
    if known is not None:
        return known
    scores = session.runner.evaluate_base()
    if key is not None:
        _base_scores.remember(key, scores)
    return scores


def _auto_workers(
    session: _Session, options: RunOptions, storage_url: str | None, trials_left: int, *, ours: bool
) -> WorkerChoice | None:
    """`--workers auto`: what runs the trials (None where a number was given). In this process where
    a pool cannot run them: a runner handed in, a custom metric only this process can import (a
    lambda, a closure, a function of __main__) and SQLite as the study storage stay here; otherwise
    _machine's choice for the base, the cores and the memory."""
    if options.workers != AUTO:
        return None
    machine = this_machine()
    here = (
        "the trial runner was handed in"
        if not ours
        else "a custom metric's function cannot be imported by another process"
        if any(importable_source(fn) is None for fn in options.metrics.values())
        else "SQLite as the study storage takes one writer"
        if storage_url and storage_url.startswith("sqlite")
        else None
    )
    if here is not None:
        return WorkerChoice(1, machine.cores, here)
    sweep, footprint = session.sweep, session.runner.footprint
    batch = sweep.space.largest(BATCH_SIZE) or sweep.fixed.get(BATCH_SIZE, 8)
    cost = worker_cost(footprint, batch, sweep.data.max_length)
    gpus = len(_visible_gpus(os.environ)) if footprint is not None and footprint.device == "cuda" else 0
    return choose_workers(_as_pool_finds_it(machine, footprint), cost, footprint, trials_left, gpus)


def _check_workers(
    sweep: Sweep, runner: TrialRunner, workers: int, force: bool, log: Callable[[str], None]
) -> None:
    """`--workers N` against this machine's cores and memory, before any worker starts or anything
    is written (the estimate: _machine)."""
    batch = sweep.space.largest(BATCH_SIZE) or sweep.fixed.get(BATCH_SIZE, 8)
    machine = _as_pool_finds_it(this_machine(), runner.footprint)
    cost = worker_cost(runner.footprint, batch, sweep.data.max_length)
    problem = too_many_workers(workers, machine, cost)
    if problem is None:
        return
    if not force:
        raise UserError(problem)
    log(
        f"warning: {workers} workers are more than fit this machine "
        f"({largest_workers(machine, cost)}); starting them all, as --force asks"
    )


def _as_pool_finds_it(machine: Machine, footprint: BaseFootprint | None) -> Machine:
    """The machine as a pool's workers find it: this process loaded the base to check it, and lets
    go of that copy before they start (_run_pool), so its weights count as free memory."""
    if footprint is None or footprint.device != "cpu":
        return machine
    return dataclasses.replace(machine, memory_bytes=machine.memory_bytes + footprint.bytes)


def _existing_study(name: str, storage_url: str | None, sweep: Sweep) -> optuna.Study | None:
    """The study of that name if it exists, after checking it optimises what the file says."""
    study = find_study(name, storage_url)
    if study is None:
        return None
    stored = tuple(study.metric_names or ())
    directions = tuple(d.name.lower() for d in study.directions)
    if (stored and stored != sweep.study.metrics) or directions != sweep.study.directions:
        raise UserError(
            f"a resumed study must keep its objective, but study {name!r} has "
            f"metrics={list(stored)}, directions={list(directions)} and the file says "
            f"metrics={list(sweep.study.metrics)}, directions={list(sweep.study.directions)}. "
            "Use another study name (--study) for a new objective."
        )
    _check_space(study, _lr_range.with_recorded_range(study, sweep))  # its own narrowed range is no change
    return study


def _described(dist: BaseDistribution) -> str:
    """A trial's distribution as describe() shows the kinds a sweep file makes; any other kind was
    sampled by something other than lorasweep, and is shown as Optuna writes it."""
    if isinstance(dist, (FloatDistribution, IntDistribution, CategoricalDistribution)):
        return describe(dist)
    return repr(dist)


def _check_space(study: optuna.Study, sweep: Sweep) -> None:
    """A continued study must sample what its trials sampled. Optuna refuses another kind of
    distribution (or other choices) under a name only when a trial asks for it, failing trial after
    trial at once; a changed range it would take, yet the study's sampler, its duplicate check and
    its results would then mix two spaces. So every change is refused here, before anything is
    written. The old ranges: those the study's trials were sampled from. With none sampled yet (a
    study is saved before its base model is evaluated: a Ctrl-C there leaves it empty) nothing is
    mixed, and the new space is the study's. lora_alpha's tie to r (a fixed k is no distribution)
    is compared with the sweep file stored by the run that sampled them."""
    old: dict[str, BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False):
        for name, dist in trial.distributions.items():
            old.setdefault(name, dist)
    if not old:
        return
    changed = [
        f"{name}: {_described(old[name])} -> {describe(new)}"
        for name, new in sweep.space.distributions.items()
        if name in old and old[name] != new
    ]
    text = StudyRecord.of(study).sweep_text
    tie, new_tie = stored_alpha_tie(text) if text is not None else None, alpha_tie(sweep.space)
    if tie is not None and tie != new_tie:
        changed.append(f"lora_alpha: {tie} -> {new_tie}")
    if changed:
        name = study.study_name
        raise UserError(
            f"a continued study must keep its search space, but study {name!r} has trials sampled from "
            f"other ranges: {'; '.join(changed)}. Run the new space as a new study (--study "
            f"{name}-2), or put the old ranges back in the sweep file to continue this one."
        )
