"""The Optuna objective: one trial, from sampled parameters to the values Optuna records.

    sample -> open the trial's MLflow run -> train and score through the trial side -> close the run

The trial side does the training (a TrialRunner); this module turns its curve points into Optuna
reports and pruning decisions, and its result or exception into the trial's record and MLflow run.
An exception is recorded and re-raised: the study's `catch` (in _workers.work) makes the trial
FAIL, the one place that decides a trial's state.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from lorasweep.objectives import CURVE_METRICS, TrialRunner, curve_metric, trial_spec

from . import record
from ._fresh import configuration
from ._workers import FINISHED
from .errors import StoreError
from .parent import setup_params
from .record import TrialRecord
from .recovery import worker_id
from .sweepfile import Sweep
from .tracking import Tracker


class Objective:
    """Called by Optuna once per trial, in whichever process runs it."""

    def __init__(
        self,
        sweep: Sweep,
        runner: TrialRunner,
        tracker: Tracker,
        parent_id: str,
        study_name: str,
        on_step: Callable[[int, int, int | None, float | None], None] | None = None,
        system_metrics: bool = True,
        study_id: str | None = None,
        deadline: float | None = None,
    ) -> None:
        self.sweep, self.runner, self.tracker = sweep, runner, tracker
        self.parent_id, self.study_name = parent_id, study_name
        self.study_id = study_id  # on each trial's run too: `delete` finds a study's runs by it
        self.deadline = deadline  # the study's timeout, a time.monotonic() reading: trials stop there
        self.on_step = on_step  # (trial number, step, max_steps, latest loss): a trial's progress
        self.system_metrics = system_metrics  # MLflow's CPU/memory/GPU samples on each trial's run
        self.worker = worker_id()
        self.fault: StoreError | None = None  # a store failed under a trial: the sweep stops

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        try:
            return self._run(trial)
        except StoreError as e:  # e.g. from opening the trial's run: the sweep stops all the same
            self.fault = self.fault or e
            raise

    def _run(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        record.claim(trial, self.worker)  # first: a kill from here on is detectable
        sampled = self.sweep.space.sample(trial)
        params = self.sweep.space.resolve(sampled, self.sweep.fixed)
        original = TrialRecord.of(trial).retry_of
        # Recorded, so a trial can be replayed alone; a retry trains exactly as its original would.
        seed = (self.sweep.study.seed or 0) + (trial.number if original is None else original)
        twin = _evaluated_twin(trial)
        tags = {
            record.STUDY_ID_TAG: self.study_id,
            record.RETRY_OF_TAG: original,
            record.DUPLICATE_OF_TAG: twin and twin.number,
        }
        run_id = self.tracker.start_trial(
            self.parent_id,
            self.study_name,
            trial.number,
            {**params, "seed": seed, **setup_params(self.sweep)},
            list(sampled),
            {k: str(v) for k, v in tags.items() if v is not None},
        )
        record.opened(trial, run_id, seed)
        if twin is not None:
            return self._reuse(trial, twin, run_id)

        started = time.monotonic()
        hook = PruningHook(trial, self.tracker, run_id, reported_metric(self.sweep))
        if self.on_step is not None:
            on_step, max_steps = self.on_step, params.get("max_steps")
            hook.on_step = lambda step, loss: on_step(trial.number, step, max_steps, loss)
        try:
            with tempfile.TemporaryDirectory(prefix=f"lorasweep-trial{trial.number}-") as workdir:
                with self.tracker.system_metrics(run_id, self.system_metrics):
                    result = self.runner.run_trial(
                        trial_spec(params, seed), Path(workdir), on_curve=hook, deadline=self.deadline
                    )
                record.scored(trial, result.metrics)
                self.tracker.finish_trial(run_id, result, time.monotonic() - started)
        except optuna.TrialPruned:
            record.pruned(trial, hook.last, hook.step)
            self.tracker.prune_trial(run_id, hook.step, time.monotonic() - started)
            raise
        except StoreError as e:
            self._store_fault(trial, run_id, e)
            raise
        except BaseException as e:
            try:
                record.failed(trial, e)  # an interrupt is marked: it runs again on resume
            finally:  # the run is closed even when the study's storage refuses (a deleted study)
                self.tracker.fail_trial(run_id, e)
            raise
        return self._values(result.metrics)

    def _store_fault(self, trial: optuna.Trial, run_id: str, fault: StoreError) -> None:
        """A store failed under the trial: record the failure in both stores as far as they still
        take writes (the store that failed may refuse this too: the fault, not a second error from
        here, is what the user sees), and stop the sweep after this trial (`fault`)."""
        self.fault = fault
        with contextlib.suppress(Exception):
            record.failed(trial, fault)
        with contextlib.suppress(Exception):
            self.tracker.fail_trial(run_id, fault)

    def _reuse(self, trial: optuna.Trial, twin: FrozenTrial, run_id: str) -> float | tuple[float, ...]:
        """The configuration was already evaluated: take its result rather than train it again."""
        earlier = TrialRecord.of(twin)
        record.reused(trial, twin.number, earlier.metrics)
        self.tracker.reuse_trial(run_id, twin.number, earlier.run_id, earlier.metrics, twin.state.name)
        if twin.state == TrialState.PRUNED:
            for step, value in sorted(twin.intermediate_values.items()):
                trial.report(value, step)
            record.pruned(trial, earlier.metrics, earlier.pruned_step)
            raise optuna.TrialPruned(f"same configuration as trial {twin.number}, which was pruned")
        return self._values(earlier.metrics)

    def _values(self, metrics: dict[str, float]) -> float | tuple[float, ...]:
        values = tuple(metrics[m] for m in self.sweep.study.metrics)
        return values[0] if len(values) == 1 else values


def _evaluated_twin(trial: optuna.Trial) -> FrozenTrial | None:
    """A finished trial of the study with the same configuration (completed ones first). The sampler
    avoids those (_fresh); this catches what slips through, e.g. two workers drawing at once."""
    mine = configuration(trial.params)
    for state in FINISHED:
        for other in trial.study.get_trials(deepcopy=False, states=(state,)):
            if configuration(other.params) == mine:
                return other
    return None


def reported_metric(sweep: Sweep) -> tuple[str, float] | None:
    """What a trial reports to Optuna at each evaluation, and its sign.

    The trial side's curve metric for the objective (the objective itself where the trial reports
    it while training, else eval_loss). Optuna's pruners compare reports in the study's direction,
    so eval_loss is negated in a study that maximises (f1, rouge...). Several objectives: nothing is
    reported (Optuna can't prune them)."""
    if len(sweep.study.metrics) > 1:
        return None
    name = curve_metric(sweep.study.metrics[0])
    return name, 1.0 if sweep.study.directions[0] == "minimize" else -1.0


class PruningHook:
    """The curve hook of one trial: its curves to MLflow; at each evaluation, the reported metric to
    Optuna and the pruner's verdict, raised as TrialPruned so the trial stops at once."""

    def __init__(
        self, trial: optuna.Trial, tracker: Tracker, run_id: str, reported: tuple[str, float] | None
    ) -> None:
        self.trial, self.tracker, self.run_id, self.reported = trial, tracker, run_id, reported
        self.last: dict[str, float] = {}  # the latest evaluation: what a pruned trial keeps
        self.step = 0
        self.on_step: Callable[[int, float | None], None] | None = None  # (step, latest loss)

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        self.tracker.log_curve(self.run_id, step, metrics)
        if self.on_step is not None:
            self.on_step(step, metrics.get("loss", metrics.get(CURVE_METRICS[0])))
        if CURVE_METRICS[0] not in metrics:  # not an evaluation
            return
        self.last = {k: metrics[k] for k in CURVE_METRICS if k in metrics}
        self.step = step
        if self.reported is None:
            return
        name, sign = self.reported
        self.trial.report(sign * metrics[name], step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} ({name}={metrics[name]:.4g})")
