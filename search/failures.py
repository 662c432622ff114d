"""The failure policy: a trial that fails fails alone, and the sweep goes on until too many have.

`FailureLimit` counts the trials that failed on their own (an error in training or scoring, not a
worker that died or was interrupted: those are run again, see _recovery) and stops the sweep at
`--max-failures`, with a summary of the failures by reason.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from lorasweep.objectives import TrialTimedOut

from ._workers import FINISHED
from .errors import SweepStopped
from .record import DIED, StudyRecord, TrialRecord


class FailureLimit:
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
        kept = TrialRecord.of(trial)
        if trial.state == TrialState.FAIL and (kept.error or DIED) != DIED and not kept.interrupted:
            self.failed.append(trial)

    def summary(self, study: optuna.Study, budget: int) -> str:
        by_reason: dict[str, list[int]] = defaultdict(list)
        for trial in self.failed:
            reason = TrialRecord.of(trial).error or "unknown error"
            by_reason[reason.splitlines()[0]].append(trial.number)
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

    def raise_if_tripped(self, study: optuna.Study, budget: int) -> None:
        if self.tripped:
            raise SweepStopped(self.summary(study, budget))


def check_pool(
    study: optuna.Study, problems: list[str], failures: FailureLimit, log: Callable[[str], None]
) -> None:
    """A worker of the pool that exited abnormally is a note when the others met the budget; the
    sweep stopped when they did not."""
    if failures.tripped or not problems:
        return
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    budget = StudyRecord.of(study).budget  # None only on a study lorasweep did not make: not met
    if budget is not None and done >= budget:
        for problem in problems:
            log(f"note: {problem}")
        return
    finished = f"{done}/{budget}" if budget is not None else f"{done}"
    raise SweepStopped(
        f"the sweep stopped: {'; '.join(problems)}. {finished} trials finished. Run the same "
        "command again to continue; finished trials are kept."
    )


def timed_out(trial: FrozenTrial) -> bool:
    """Whether the study's timeout stopped the trial (the trial side's TrialTimedOut, recorded as
    its error by record.failed)."""
    kept = TrialRecord.of(trial)
    return kept.interrupted and (kept.error or "").startswith(f"{TrialTimedOut.__name__}:")


def require_a_complete_trial(study: optuna.Study) -> None:
    """A sweep that ends with no complete trial has nothing to hand over: SweepStopped, saying
    whether its trials failed or were all pruned."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.COMPLETE for t in trials):
        return
    stopped = [t.number for t in trials if timed_out(t)]
    if stopped:
        raise SweepStopped(
            f"no trial finished: the study's timeout stopped trial {', '.join(map(str, stopped))} before "
            "it completed. Raise study.timeout or lower train.max_steps (lorasweep validate estimates "
            "the time), then run again."
        )
    if trials and all(t.state == TrialState.PRUNED for t in trials):
        raise SweepStopped(
            f"no trial finished: the pruner stopped all {len(trials)} trials early. Loosen study.pruner "
            "(more warmup steps, a higher percentile) or remove it, and run again."
        )
    raise SweepStopped("no trial finished: see the error on each failed trial (lorasweep trials)")
