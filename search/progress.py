"""What a sweep prints: one line per finished trial and a study-level bar with the best so far."""

from __future__ import annotations

import sys

import optuna
from tqdm import tqdm

from .record import DUPLICATE_OF, ERROR, RETRY_OF, TrialRecord


def objective_names(study: optuna.Study) -> tuple[str, ...]:
    """What each of the study's objective values is called: the metrics lorasweep set on it, else
    Optuna's own names, value0, value1... (a study created elsewhere, or one stopped before its
    metric names were set)."""
    return tuple(study.metric_names or [f"value{i}" for i in range(len(study.directions))])


def format_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def format_params(params: dict) -> str:
    return " ".join(f"{k}={format_value(v) if isinstance(v, float) else v}" for k, v in params.items())


def trial_line(trial: optuna.trial.FrozenTrial, metrics: tuple[str, ...]) -> str:
    kept = TrialRecord.of(trial)
    if trial.state == optuna.trial.TrialState.PRUNED:
        # A pruned trial's Optuna value is its last report (maybe a negated eval_loss): show the loss.
        loss = kept.metrics.get("eval_loss")
        step = "?" if kept.pruned_step is None else kept.pruned_step
        scored = f"at step {step}, eval_loss={format_value(loss)}"
    else:
        values = trial.values or []
        scored = " ".join(f"{m}={format_value(v)}" for m, v in zip(metrics, values, strict=False)) or "-"
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    return (
        f"trial {trial.number:>3} {trial.state.name:<8} {scored}  {format_params(trial.params)}"
        f"  ({seconds:.1f} s)" + "".join(f"  {n}" for n in trial_notes(kept.notes))
    )


def trial_notes(notes: dict, short: bool = False) -> list[str]:
    """What a trial's record notes (TrialRecord.notes) say about it: a reused result, a retry, its
    error. `short` (for tables): the error's first line, cut to 80 characters."""
    said = []
    if DUPLICATE_OF in notes:
        said.append(f"same configuration as trial {notes[DUPLICATE_OF]}, result reused")
    if RETRY_OF in notes:
        said.append(f"retry of trial {notes[RETRY_OF]}")
    if ERROR in notes:
        error = str(notes[ERROR])
        said.append(error.splitlines()[0][:80] if short else f"error: {error}")
    return said


def best_text(study: optuna.Study, metrics: tuple[str, ...]) -> str:
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not finished:
        return "best: -"
    if len(metrics) == 1:
        best = study.best_trial
        return f"best {metrics[0]}={format_value(best.value)} (trial {best.number})"
    return f"pareto front: {len(study.best_trials)} trials"


class Progress:
    """An Optuna callback: prints the trial line above a bar that tracks the trial budget."""

    def __init__(self, metrics: tuple[str, ...], budget: int, done: int, quiet: bool) -> None:
        self.metrics, self.quiet = metrics, quiet
        self.best = ""  # the study's best so far, kept beside the running trial's progress
        self.bar = (
            None
            if quiet
            else tqdm(
                total=budget,
                initial=done,
                desc="sweep",
                unit="trial",
                file=sys.stderr,
                dynamic_ncols=True,
                leave=False,
            )
        )

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.bar is None:
            return
        self.bar.write(trial_line(trial, self.metrics), file=sys.stdout)
        # The budget counts finished trials (failed ones are replaced), the study's: with several
        # workers, others finish trials too.
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        self.bar.n = len(study.get_trials(deepcopy=False, states=finished))
        self.best = best_text(study, self.metrics)
        self.bar.set_postfix_str(self.best)

    def trial_step(self, number: int, step: int, max_steps: int | None, loss: float | None) -> None:
        """The running trial's own progress beside the study's, so a long trial is not a silent one."""
        if self.bar is None:
            return
        of = f"/{max_steps}" if max_steps and max_steps > 0 else ""
        latest = f", loss {format_value(loss)}" if loss is not None else ""
        self.bar.set_postfix_str(
            f"trial {number}: step {step}{of}{latest}" + (f"; {self.best}" if self.best else "")
        )

    def note(self, text: str) -> None:
        """A line above the bar (nothing when quiet)."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
