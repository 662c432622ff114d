"""The study's MLflow parent run: what it records about the sweep when it opens, and what it gets
when the study's budget is met: the summary metrics, the best trial's tags and the plots.

The run is closed with its summary first and the plots logged after (MLflow takes artifacts on a
closed run): a process killed while drawing them (a few seconds) leaves no run RUNNING. Inside
`plots_after()` (the CLI's run and resume) they are drawn when the block ends, after the result line
is printed, and still before the process exits; elsewhere at once, so a caller that reads the run
finds them there."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .record import BEST_RUN_TAG, PARETO_TAG, StudyRecord, TrialRecord
from .report import write_report
from .selection import choose
from .sweepfile import Sweep
from .tracking import Tracker


def setup_params(sweep: Sweep) -> dict[str, Any]:
    """The fixed setup every trial shares, recorded on each run so a run stands on its own."""
    return {
        "model.base": sweep.model.base,
        "model.revision": sweep.model.revision,  # None: the folder as it is, or the hub's main
        "model.trust_remote_code": sweep.model.trust_remote_code,
        "model.method": sweep.model.method,
        "model.target_modules": sweep.model.target_modules,
        "data.path": sweep.data.path,
        "data.train_split": sweep.data.train_split,
        "data.eval_split": sweep.data.eval_split,
        "data.max_eval_rows": sweep.data.max_eval_rows,  # with data.seed: which eval rows score
        "data.seed": sweep.data.seed,
        # the user's metric functions, as every process imports them (module:function)
        **{f"eval.metrics.{name}": path for name, path in sweep.eval.metric_paths().items()},
    }


def study_params(sweep: Sweep) -> dict[str, Any]:
    """The parent run's params: the fixed settings, the setup, the space and the strategy."""
    space = {f"space.{name}": repr(dist) for name, dist in sweep.space.distributions.items()}
    return {
        **sweep.fixed,
        **setup_params(sweep),
        **space,
        "study.sampler": sweep.study.sampler,
        "study.seed": sweep.study.seed,
        "study.n_trials": sweep.study.n_trials,
        "study.metrics": ",".join(sweep.study.metrics),
        "study.pruner": sweep.study.pruner,
        "study.retries": sweep.study.retries,
    }


def finish(
    study: optuna.Study,
    tracker: Tracker,
    parent_id: str,
    sweep: Sweep,
    *,
    plots: bool,
    log: Callable[[str], None],
    status: str = "FINISHED",
) -> None:
    """Close the parent run with its summary, then log the study's plots on it (unless `plots` is
    off): now, or when the enclosing plots_after() block ends."""
    tracker.finish_study(parent_id, *summary(study, sweep), status=status)
    if not plots:
        return
    if _deferred is not None:
        _deferred.append(lambda: _log_plots(study, tracker, parent_id, log))
    else:
        _log_plots(study, tracker, parent_id, log)


_deferred: list[Callable[[], None]] | None = None  # the plots waiting for plots_after() to end


@contextlib.contextmanager
def plots_after() -> Iterator[None]:
    """Plots that finish() is asked for inside the block are drawn when it ends (however it ends):
    the CLI prints the study's result first, then waits for its pictures."""
    global _deferred
    outer, _deferred = _deferred, []
    try:
        yield
    finally:
        waiting, _deferred = _deferred, outer
        for draw in waiting:
            draw()


def close_if_left_open(
    study: optuna.Study, tracker: Tracker, sweep: Sweep, *, plots: bool, log: Callable[[str], None]
) -> None:
    """The parent run of a study that holds its budget, if nobody closed it: the run that started
    the study stopped (killed, Ctrl-C) while other workers finished the trials."""
    parent_id = StudyRecord.of(study).parent_run_id
    if parent_id is None or tracker.run_status(parent_id) in (None, "FINISHED"):
        return
    finish(study, tracker, parent_id, sweep, plots=plots, log=log)


def summary(study: optuna.Study, sweep: Sweep) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) for the parent run: trial counts by state, the best trial and its metrics
    (one objective) or the Pareto front's trials (several)."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    metrics = {f"n_{s.name.lower()}": float(states.count(s)) for s in set(states)}
    tags: dict[str, str] = {}
    best = choose(study, ())[0] if len(sweep.study.metrics) == 1 else None  # ties broken as `best` does
    if any(s == TrialState.COMPLETE for s in states):
        if best is not None:
            kept = TrialRecord.of(best)
            if best.value is not None:  # a complete trial of one objective has its value
                metrics[f"best_{sweep.study.metrics[0]}"] = best.value
            metrics["best_trial"] = float(best.number)
            tags[BEST_RUN_TAG] = kept.run_id or ""
            metrics.update({f"best_{k}": v for k, v in kept.metrics.items()})
        else:
            tags[PARETO_TAG] = ",".join(str(t.number) for t in study.best_trials)
    return metrics, tags


def _log_plots(study: optuna.Study, tracker: Tracker, parent_id: str, log: Callable[[str], None]) -> None:
    """The study's plots and HTML report on the parent run, under report/ (replaced on every run, so
    a resumed study shows all its trials). A plot that fails never fails the sweep: the user is told
    why, and `lorasweep report` can write them again."""
    try:
        with tempfile.TemporaryDirectory(prefix="lorasweep-report-") as folder:
            write_report(study, Path(folder))
            tracker.log_folder(parent_id, Path(folder), "report")
    except Exception as e:  # the sweep's results matter more than its pictures
        log(
            f"note: the study's plots could not be written: {type(e).__name__}: {e}. "
            "Finished trials are kept; lorasweep report writes the plots again."
        )
