"""The Optuna study behind a sweep: storage, sampler, pruner, the objective that drives one trial,
and the loop.

A rerun with the same study name continues the study up to its trial budget: finished (complete
or pruned) trials count, the MLflow parent run is re-attached (its id is stored on the study), and
trials whose worker died are failed, their MLflow runs closed, and run again (`study.retries`).
"""

from __future__ import annotations

import dataclasses
import gc
import re
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from lorasweep.objectives import Report, TrialResult, TrialSpec, Worker

from . import _names
from ._progress import Progress, best_text
from ._pruners import build_pruner
from ._recovery import DIED, RETRY_OF_ATTR, WORKER_ATTR, _Recovery, _worker_id
from ._workers import FINISHED, run_pool, work
from .errors import SweepStopped, UserError
from .report import REPORTED_ATTR, write_report
from .sweep import Sweep, load_sweep
from .tracking import Tracker, redact, tracking_uri

DEFAULT_STORAGE = Path("mlruns/optuna.journal")
DEFAULT_MAX_FAILURES = 5
# Database storages beat every HEARTBEAT_S; a trial silent for GRACE_S is failed and run again.
HEARTBEAT_S, GRACE_S = 30, 90

# Keys of the study's user attributes: the seams that resume, workers and promotion build on.
SWEEP_ATTR = "sweep_yaml"
SWEEP_PATH_ATTR = "sweep_path"
BUDGET_ATTR = "n_trials"
TRACKING_ATTR = "tracking_uri"
PARENT_RUN_ATTR = "mlflow_parent_run_id"
BASE_METRICS_ATTR = "base_metrics"
# ...and of each trial's (who runs it and what it retries: WORKER_ATTR, RETRY_OF_ATTR in _recovery).
DUPLICATE_OF_ATTR = "duplicate_of"


def _journal_path(url: str | None) -> Path | None:
    if url is None:
        return DEFAULT_STORAGE
    return Path(url.removeprefix("journal:///")) if url.endswith(".journal") else None


def open_storage(
    url: str | None, on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None
) -> BaseStorage | str:
    """Any Optuna storage URL; by default a journal file under mlruns/, which several processes on
    one machine can share (SQLite locks up under concurrent writers).

    Database URLs get Optuna's heartbeat, so a trial whose worker died is failed (and handed to
    `on_stale`) by whichever worker notices. A journal has no heartbeat: dead workers on this
    machine are found by process id instead (`_fail_dead_workers`)."""
    path = _journal_path(url)
    if path is None:
        if re.match(r"(sqlite|postgresql|mysql|oracle|mssql)(\+\w+)?://", url):
            with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                try:
                    return RDBStorage(
                        url,
                        heartbeat_interval=HEARTBEAT_S,
                        grace_period=GRACE_S,
                        heartbeat_stale_trial_callback=on_stale,
                    )
                except SQLAlchemyError as e:  # a server that is down, a wrong password, no driver
                    reason = str(getattr(e, "orig", None) or e).splitlines()[0]
                    raise UserError(
                        f"the study storage must be a database this machine can open, but got "
                        f"storage={redact(url)}: {reason}. Check the server, the URL and its password."
                    ) from e
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
            f"the study must exist in the storage, but got study={name!r}. "
            f"Studies: {', '.join(names) or '(none)'}."
        )
    return optuna.load_study(study_name=name, storage=opened)


class TrialRunner(Protocol):
    """What the study needs from the trial side; objectives.Worker is the real one."""

    train_rows: int

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
    max_failures: int = DEFAULT_MAX_FAILURES  # failed trials in one run before the sweep stops
    workers: int = 1  # local worker processes; 1 runs the trials in this process
    plots: bool = True  # the study's plots on the parent run at the end (a few seconds)


def run_sweep(
    sweep: Sweep,
    options: RunOptions = RunOptions(),
    log: Callable[[str], None] = print,
    runner: TrialRunner | None = None,
) -> optuna.Study:
    """Create or continue the study and run trials until it holds its budget of finished trials.

    Raises SweepStopped when `options.max_failures` trials fail in this run. `runner` defaults to
    an objectives.Worker for the sweep's model and data (tests pass stubs)."""
    name = options.study_name or sweep.study.name
    check_study_name(name)
    budget = options.n_trials or sweep.study.n_trials
    storage_url = options.storage or sweep.study.storage
    if options.workers > 1 and storage_url and storage_url.startswith("sqlite"):
        raise UserError(
            "--workers above 1 needs a study storage that several processes can write at once, but "
            f"got storage={redact(storage_url)} (SQLite locks up under concurrent writers). Use the "
            "default journal (mlruns/optuna.journal), a file ending in .journal, or postgresql://."
        )
    existing = _existing_study(name, storage_url, sweep)
    done = len(existing.get_trials(deepcopy=False, states=FINISHED)) if existing else 0
    if existing is not None and done >= budget:
        tracker = Tracker(tracking_uri(options.tracking_uri, sweep.tracking_uri), sweep.experiment or name)
        if existing.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            # Nothing to run, but a dead worker's trial must not stay RUNNING (nor its MLflow run).
            _Recovery(tracker, retries=0).recover(existing)
        _close_parent(existing, tracker, sweep, options.plots)
        log(
            f"study {name!r} already has {done} finished trials (budget {budget}); nothing to run. "
            f"{best_text(existing, sweep.study.metrics)}"
        )
        return existing

    # Data and base model before the stores: bad input fails before anything is written.
    if runner is None:
        runner = Worker(sweep.model, sweep.data, sweep.eval, log=None if options.quiet else log)
    check_batch_fits(sweep, runner.train_rows)

    uri = tracking_uri(options.tracking_uri, sweep.tracking_uri)
    tracker = Tracker(uri, sweep.experiment or name)
    recovery = _Recovery(tracker, sweep.study.retries)
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(storage_url, on_stale=recovery),
        sampler=make_sampler(sweep),
        pruner=build_pruner(sweep.study.pruner),
        directions=list(sweep.study.directions),
        load_if_exists=True,
    )
    if existing is None:
        with warnings.catch_warnings():  # "experimental since Optuna 3.2": stable enough for us
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(sweep.study.metrics))
    elif study.user_attrs.get(SWEEP_ATTR) != sweep.text:
        log(f"note: study {name!r} was started from a different sweep file; continuing with this one")
    reported = _reported_metric(sweep)
    for key, value in (
        (REPORTED_ATTR, {"metric": reported[0], "sign": reported[1]} if reported else None),
        (SWEEP_ATTR, sweep.text),
        (SWEEP_PATH_ATTR, str(sweep.path.resolve()) if sweep.path else None),
        (BUDGET_ATTR, budget),
        (TRACKING_ATTR, redact(uri)),
    ):
        study.set_user_attr(key, value)

    parent_id = tracker.parent_run(
        name, study.user_attrs.get(PARENT_RUN_ATTR), _study_params(sweep), sweep.text
    )
    study.set_user_attr(PARENT_RUN_ATTR, parent_id)
    recovered = recovery.recover(study)
    if not options.quiet:
        log(
            f"study {name!r}: {done}/{budget} trials done, sampler {sweep.study.sampler}, "
            f"pruner {sweep.study.pruner['type'] if sweep.study.pruner else 'none'}, "
            f"objective {', '.join(f'{m} ({d})' for m, d in zip(sweep.study.metrics, sweep.study.directions))}"
        )
        log(f"mlflow: {redact(uri)} (experiment {sweep.experiment or name!r}, parent run {parent_id})")
        if recovered:
            log(
                f"recovered: trial {', '.join(map(str, recovered))} did not finish (worker stopped); see retries"
            )

    progress = None
    failures = _FailureLimit(options.max_failures)
    try:
        if BASE_METRICS_ATTR not in study.user_attrs:
            base = runner.evaluate_base()
            study.set_user_attr(BASE_METRICS_ATTR, base)
            tracker.log_base_metrics(parent_id, base)
            if not options.quiet:
                log("base model: " + " ".join(f"{k}={v:.4g}" for k, v in base.items()))
        progress = Progress(sweep.study.metrics, budget, done, options.quiet)
        if options.workers > 1:
            runner = None  # each worker loads its own model; this process only watches
            gc.unfreeze()  # the Worker froze what it loaded: out of the collector's sight otherwise
            gc.collect()
            problems = run_pool(
                study,
                options.workers,
                storage=storage_url or str(DEFAULT_STORAGE.resolve()),
                tracking_uri=tracker.uri,
                max_failures=options.max_failures,
                on_trial=lambda trial: (progress(study, trial), failures.count(trial)),
                stop=lambda: failures.tripped,
            )
            recovery.fail_dead(study)  # a worker that was killed: its trial is failed and queued
            _check_pool(study, problems, failures, log)
        else:
            _run_trials(
                study,
                sweep,
                _Objective(sweep, runner, tracker, parent_id, name),
                recovery,
                progress,
                failures,
            )
    except BaseException as e:
        tracker.fail_study(parent_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if progress is not None:
            progress.close()
    if options.plots:
        _log_report(study, tracker, parent_id)
    summary, tags = _summary(study, sweep)
    if failures.tripped:
        tracker.finish_study(parent_id, summary, tags, status="FAILED")
        raise SweepStopped(failures.report(study, budget))
    tracker.finish_study(parent_id, summary, tags)
    return study


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
    sweep = stored_sweep(study)
    name = study.study_name
    parent_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if parent_id is None:
        raise UserError(
            f"a study to join must have its MLflow parent run, but study {name!r} has none yet. "
            f"Start it with lorasweep run FILE --study {name}, then start workers."
        )
    uri = study_tracking_uri(study, options.tracking_uri)
    if runner is None:
        runner = Worker(sweep.model, sweep.data, sweep.eval, log=None if options.quiet else log)
    check_batch_fits(sweep, runner.train_rows)
    tracker = Tracker(uri, sweep.experiment or name)
    recovery = _Recovery(tracker, sweep.study.retries)
    sampler = make_sampler(sweep)
    # Reseeded, as Optuna does for n_jobs > 1: workers that share a seed would propose the same
    # parameters at the same time. (A trial still trains with seed + its number.)
    sampler.reseed_rng()
    study = optuna.load_study(
        study_name=name,
        storage=open_storage(storage, on_stale=recovery),
        sampler=sampler,
        pruner=build_pruner(sweep.study.pruner),
    )
    recovery.recover(study)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    budget = study.user_attrs.get(BUDGET_ATTR, sweep.study.n_trials)
    if not options.quiet:
        log(f"worker {_worker_id()} joins study {name!r}: {done}/{budget} trials done")
    progress = Progress(sweep.study.metrics, budget, done, options.quiet)
    failures = _FailureLimit(options.max_failures)
    try:
        _run_trials(
            study, sweep, _Objective(sweep, runner, tracker, parent_id, name), recovery, progress, failures
        )
    finally:
        progress.close()
    if failures.tripped:
        raise SweepStopped(failures.report(study, budget))
    return study


def _run_trials(
    study: optuna.Study,
    sweep: Sweep,
    objective: Callable[[optuna.Trial], Any],
    recovery: _Recovery,
    progress: Progress,
    failures: _FailureLimit,
) -> None:
    """Trials in this process until the study holds its budget (_workers.work: exact with any number
    of workers). A trial that raises fails alone (its MLflow run is closed FAILED with the error)
    and the sweep goes on: the study's catch, not a try/except hidden in the objective."""
    work(
        study,
        objective,
        budget=lambda: study.user_attrs[BUDGET_ATTR],
        callbacks=[progress, failures],
        recover=recovery.fail_dead,
        stop=lambda: failures.tripped,
        timeout=sweep.study.timeout,
        log=progress.note,
    )


def _check_pool(
    study: optuna.Study, problems: list[str], failures: _FailureLimit, log: Callable[[str], None]
) -> None:
    """A worker of the pool that exited abnormally is a note when the others met the budget; the
    sweep stopped when they did not."""
    if failures.tripped or not problems:
        return
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    budget = study.user_attrs[BUDGET_ATTR]
    if done >= budget:
        for problem in problems:
            log(f"note: {problem}")
        return
    raise SweepStopped(
        f"the sweep stopped: {'; '.join(problems)}. {done}/{budget} trials finished. Run the same "
        "command again to continue; finished trials are kept."
    )


def stored_sweep(study: optuna.Study) -> Sweep:
    """The sweep a study was started with, from the file text stored on it (for `resume` and
    `worker`): the file on disk may have changed or gone since."""
    text = study.user_attrs.get(SWEEP_ATTR)
    if text is None:
        raise UserError(
            f"a study to resume or join must have been started by lorasweep, but study {study.study_name!r} "
            "holds no sweep file. Run it with: lorasweep run FILE --study NAME."
        )
    path = Path(study.user_attrs.get(SWEEP_PATH_ATTR) or f"{study.study_name}.yaml")
    sweep = load_sweep(path, text=text)
    return dataclasses.replace(sweep, tracking_uri=study.user_attrs.get(TRACKING_ATTR) or sweep.tracking_uri)


def study_tracking_uri(study: optuna.Study, flag: str | None) -> str:
    """Where a study's MLflow runs are: the flag, then $MLFLOW_TRACKING_URI, then the URI the study
    was run with (stored, password masked), then the local default."""
    uri = tracking_uri(flag, study.user_attrs.get(TRACKING_ATTR))
    if "***" in uri:
        raise UserError(
            f"the tracking URI must carry its password, but study {study.study_name!r} stores "
            f"{uri} (masked). Pass --tracking-uri or set MLFLOW_TRACKING_URI."
        )
    return Tracker.absolute(uri)


def check_study_name(name: str) -> None:
    # The name lands in MLflow filter strings and file names: keep it to a safe alphabet.
    if not re.fullmatch(r"[\w.-]+", name):
        raise UserError(
            f"a study name must use only letters, digits, '.', '-' and '_', but got name={name!r}."
        )


def check_batch_fits(sweep: Sweep, train_rows: int) -> None:
    """The largest training batch the sweep can sample must fit in the train split."""
    canonical = "per_device_train_batch_size"
    largest = sweep.space.largest(canonical)
    if largest is None:
        largest = sweep.fixed.get(canonical, 8)
    if largest <= train_rows:
        return
    names = [canonical, *(alias for alias, c in _names.ALIASES.items() if c == canonical)]
    where = next(
        ((s, n) for s in ("search_space", "train") for n in names if (s, n) in sweep.lines), ("train",)
    )
    problems = sweep.problems()
    problems.add(
        where,
        f"the batch size must be at most the {train_rows} rows of the train split, but got "
        f"{canonical}={largest}. Use a smaller batch_size, or more data.",
    )
    problems.raise_if_any()


def _existing_study(name: str, storage_url: str | None, sweep: Sweep) -> optuna.Study | None:
    """The study of that name if it exists, after checking it optimises what the file says.
    Read only: a journal file that does not exist yet is not created here."""
    journal = _journal_path(storage_url)
    if journal is not None and not journal.exists():
        return None
    storage = open_storage(storage_url)
    if name not in optuna.get_all_study_names(storage):
        return None
    study = optuna.load_study(study_name=name, storage=storage)
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
        self.worker = _worker_id()

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        trial.set_user_attr(WORKER_ATTR, self.worker)  # first: a kill from here on is detectable
        sampled = self.sweep.space.sample(trial)
        params = self.sweep.space.resolve(sampled, self.sweep.fixed)
        original = trial.user_attrs.get(RETRY_OF_ATTR)
        # Recorded, so a trial can be replayed alone; a retry trains exactly as its original would.
        seed = (self.sweep.study.seed or 0) + (trial.number if original is None else original)

        def going_to(target: str) -> dict[str, Any]:
            return {k: v for k, v in params.items() if _names.target_of(k) == target}

        spec = TrialSpec(
            training_args=going_to("training"),
            lora_args=going_to("lora"),
            early_stopping=going_to("early_stopping"),
            seed=seed,
        )
        twin = _evaluated_twin(trial)
        tags = {"lorasweep.retry_of": original, "lorasweep.duplicate_of": twin and twin.number}
        run_id = self.tracker.start_trial(
            self.parent_id,
            self.study_name,
            trial.number,
            {**params, "seed": seed, **_setup_params(self.sweep)},
            list(sampled),
            {k: str(v) for k, v in tags.items() if v is not None},
        )
        trial.set_user_attr("mlflow_run_id", run_id)
        trial.set_user_attr("seed", seed)
        if twin is not None:
            return self._reuse(trial, twin, run_id)

        started = time.monotonic()
        reporter = _Reporter(trial, self.tracker, run_id, _reported_metric(self.sweep))
        try:
            with tempfile.TemporaryDirectory(prefix=f"lorasweep-trial{trial.number}-") as workdir:
                result = self.runner.run_trial(spec, Path(workdir), report=reporter)
                trial.set_user_attr("metrics", result.metrics)
                self.tracker.finish_trial(run_id, result, time.monotonic() - started)
        except optuna.TrialPruned:
            trial.set_user_attr("metrics", reporter.last)
            trial.set_user_attr("pruned_step", reporter.step)
            self.tracker.prune_trial(run_id, reporter.step, time.monotonic() - started)
            raise
        except BaseException as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
            if isinstance(e, KeyboardInterrupt):  # run again on resume, like a dead worker's trial
                trial.set_user_attr("interrupted", True)
            self.tracker.fail_trial(run_id, e)
            raise
        return self._values(result.metrics)

    def _reuse(self, trial: optuna.Trial, twin: FrozenTrial, run_id: str) -> float | tuple[float, ...]:
        """The configuration was already evaluated: take its result rather than train it again."""
        metrics = twin.user_attrs.get("metrics", {})
        trial.set_user_attr(DUPLICATE_OF_ATTR, twin.number)
        trial.set_user_attr("metrics", metrics)
        self.tracker.reuse_trial(
            run_id, twin.number, twin.user_attrs.get("mlflow_run_id"), metrics, twin.state.name
        )
        if twin.state == TrialState.PRUNED:
            for step, value in sorted(twin.intermediate_values.items()):
                trial.report(value, step)
            trial.set_user_attr("pruned_step", twin.user_attrs.get("pruned_step"))
            raise optuna.TrialPruned(f"same configuration as trial {twin.number}, which was pruned")
        return self._values(metrics)

    def _values(self, metrics: dict[str, float]) -> float | tuple[float, ...]:
        values = tuple(metrics[m] for m in self.sweep.study.metrics)
        return values[0] if len(values) == 1 else values


def _evaluated_twin(trial: optuna.Trial) -> FrozenTrial | None:
    """A finished trial of the study with exactly these parameters (completed ones first)."""
    params = trial.params
    for state in FINISHED:
        for other in trial.study.get_trials(deepcopy=False, states=(state,)):
            if other.params == params:
                return other
    return None


def _reported_metric(sweep: Sweep) -> tuple[str, float] | None:
    """What a trial reports to Optuna at each evaluation, and its sign.

    The objective itself when the Trainer computes it (eval_loss, eval_perplexity), else eval_loss.
    Optuna's pruners compare reports in the study's direction, so eval_loss is negated in a study
    that maximises (f1, rouge...). Several objectives: nothing is reported (Optuna can't prune them)."""
    if len(sweep.study.metrics) > 1:
        return None
    metric = sweep.study.metrics[0]
    name = metric if metric in ("eval_loss", "eval_perplexity") else "eval_loss"
    return name, 1.0 if sweep.study.directions[0] == "minimize" else -1.0


class _Reporter:
    """The report hook of one trial: curves to MLflow; at each evaluation, the reported metric to
    Optuna and the pruner's verdict, raised as TrialPruned so the trial stops at once."""

    def __init__(
        self, trial: optuna.Trial, tracker: Tracker, run_id: str, reported: tuple[str, float] | None
    ) -> None:
        self.trial, self.tracker, self.run_id, self.reported = trial, tracker, run_id, reported
        self.last: dict[str, float] = {}  # the latest evaluation: what a pruned trial keeps
        self.step = 0

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        self.tracker.log_curve(self.run_id, step, metrics)
        if "eval_loss" not in metrics:
            return
        self.last = {k: metrics[k] for k in ("eval_loss", "eval_perplexity") if k in metrics}
        self.step = step
        if self.reported is None:
            return
        name, sign = self.reported
        self.trial.report(sign * metrics[name], step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} ({name}={metrics[name]:.4g})")


class _FailureLimit:
    """An Optuna callback that stops the sweep once `limit` trials have failed in this run."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failed: list[FrozenTrial] = []

    @property
    def tripped(self) -> bool:
        return len(self.failed) >= self.limit

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:  # a trial of this process's optimize: it raised
            self.failed.append(trial)
            if self.tripped:
                study.stop()

    def count(self, trial: FrozenTrial) -> None:
        """A trial some worker ended (the pool watches them all): counted if it failed on its own,
        not when its worker died or was interrupted."""
        attrs = trial.user_attrs
        if (
            trial.state == TrialState.FAIL
            and attrs.get("error", DIED) != DIED
            and not attrs.get("interrupted")
        ):
            self.failed.append(trial)

    def report(self, study: optuna.Study, budget: int) -> str:
        by_reason: dict[str, list[int]] = defaultdict(list)
        for trial in self.failed:
            by_reason[str(trial.user_attrs.get("error", "unknown error")).splitlines()[0]].append(
                trial.number
            )
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        head = (
            f"the sweep stopped: {len(self.failed)} trials failed in this run (--max-failures "
            f"{self.limit}); {done}/{budget} trials finished. Failures by reason:"
        )
        lines = [head]
        lines += [
            f"  {reason}  (trial{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))})"
            for reason, numbers in by_reason.items()
        ]
        lines.append(
            "Each failed MLflow run holds its traceback in error.txt. Fix the cause and run the same "
            "command again to continue; finished trials are kept."
        )
        return "\n".join(lines)


def _close_parent(study: optuna.Study, tracker: Tracker, sweep: Sweep, plots: bool) -> None:
    """The parent run of a study that holds its budget, if nobody closed it: the run that started
    the study stopped (killed, Ctrl-C) while other workers finished the trials."""
    parent_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if parent_id is None or tracker.run_status(parent_id) in (None, "FINISHED"):
        return
    if plots:
        _log_report(study, tracker, parent_id)
    tracker.finish_study(parent_id, *_summary(study, sweep))


def _log_report(study: optuna.Study, tracker: Tracker, parent_id: str) -> None:
    """The study's plots and HTML report on the parent run, under report/ (replaced on every run, so
    a resumed study shows all its trials). A plot that fails never fails the sweep."""
    try:
        with tempfile.TemporaryDirectory(prefix="lorasweep-report-") as folder:
            write_report(study, Path(folder))
            tracker.log_folder(parent_id, Path(folder), "report")
    except Exception as e:  # noqa: BLE001 - the sweep's results matter more than its pictures
        warnings.warn(f"the study's plots could not be written: {type(e).__name__}: {e}", stacklevel=2)


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
        "study.pruner": sweep.study.pruner,
        "study.retries": sweep.study.retries,
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
