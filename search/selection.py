"""Which trial a study hands over: the best, or, with several objectives, one trial of the Pareto
front chosen by the rule `promote.select`.

The rule is a list of metrics, each with a tolerance in the metric's own units. Among the front,
keep the trials within the tolerance of the best on the first metric; among those, the ones
within the tolerance of the best on the next; and so on. The best on the last metric wins, and
the lower trial number breaks a tie.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from lorasweep.objectives import METRICS

from .errors import UserError
from .record import TrialRecord


@dataclass(frozen=True)
class Criterion:
    metric: str
    tolerance: float = 0.0  # in the metric's units: 0.01 of f1 keeps trials within 0.01 of the best


def choose(study: optuna.Study, rule: tuple[Criterion, ...]) -> tuple[FrozenTrial | None, list[FrozenTrial]]:
    """(the chosen trial, the candidates it was chosen from: the best trial or the Pareto front)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None, []
    if len(study.directions) == 1:
        return study.best_trial, [study.best_trial]
    front = sorted(study.best_trials, key=lambda t: t.number)
    return _by_rule(study, rule, front), front


def top(study: optuna.Study, rule: tuple[Criterion, ...], k: int) -> list[FrozenTrial]:
    """The k trials an adapter bundle hands over, best first: with one objective the best complete
    trials, with several the Pareto front in the order the rule picks from it. A duplicate
    configuration stands for the trial it copied, which is counted once."""
    if len(study.directions) == 1:
        sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        scored = [(t.value, t) for t in complete if t.value is not None]  # a complete trial has its value
        ranked = [t for _, t in sorted(scored, key=lambda vt: (sign * vt[0], vt[1].number))]
    else:
        remaining, ranked = sorted(study.best_trials, key=lambda t: t.number), []
        while remaining:
            ranked.append(_by_rule(study, rule, remaining))
            remaining = [t for t in remaining if t.number != ranked[-1].number]
    distinct: list[FrozenTrial] = []
    for trial in ranked:
        twin = TrialRecord.of(trial).duplicate_of
        trial = study.trials[twin] if twin is not None else trial
        if all(t.number != trial.number for t in distinct):
            distinct.append(trial)
    where = "complete trials" if len(study.directions) == 1 else "trials on its Pareto front"
    if not 1 <= k <= len(distinct):
        raise UserError(
            f"--top must be between 1 and the {len(distinct)} distinct {where} of study "
            f"{study.study_name!r}, but got top={k}."
        )
    return distinct[:k]


def _by_rule(study: optuna.Study, rule: tuple[Criterion, ...], candidates: list[FrozenTrial]) -> FrozenTrial:
    names = list(study.metric_names or [])
    rule = rule or tuple(Criterion(m) for m in names)
    for criterion in rule:
        maximize = _maximize(study, names, criterion.metric)
        scored = [t for t in candidates if criterion.metric in _metrics(t)]
        if not scored:
            continue
        values = [_metrics(t)[criterion.metric] for t in scored]
        best = max(values) if maximize else min(values)
        candidates = [t for t, v in zip(scored, values, strict=True) if abs(v - best) <= criterion.tolerance]
    last = rule[-1].metric if rule else None
    if last is not None and all(last in _metrics(t) for t in candidates):
        sign = -1.0 if _maximize(study, names, last) else 1.0
        candidates = sorted(candidates, key=lambda t: (sign * _metrics(t)[last], t.number))
    return candidates[0]


def describe(rule: tuple[Criterion, ...], names: list[str]) -> str:
    rule = rule or tuple(Criterion(m) for m in names)
    parts = [f"{c.metric}" + (f" within {c.tolerance:g} of the best" if c.tolerance else "") for c in rule]
    return "best " + ", then ".join(parts)


def _maximize(study: optuna.Study, names: list[str], metric: str) -> bool:
    if metric in names:
        return study.directions[names.index(metric)] == optuna.study.StudyDirection.MAXIMIZE
    return METRICS.get(metric) == "maximize"


def _metrics(trial: FrozenTrial) -> dict[str, float]:
    return TrialRecord.of(trial).metrics


def pick(study: optuna.Study, rule: tuple[Criterion, ...], number: int | None = None) -> FrozenTrial:
    """The trial to hand over: `number`, or the one the rule picks. A duplicate configuration's
    trial stands for the trial it copied, whose run holds the adapter."""
    if number is None:
        trial, _ = choose(study, rule)
        if trial is None:
            raise UserError(
                f"a study must have a complete trial to hand over, but study {study.study_name!r} has none."
            )
    else:
        numbers = [t.number for t in study.get_trials(deepcopy=False)]
        if number not in numbers:
            raise UserError(
                f"--trial must be a trial of study {study.study_name!r}, but got trial={number}. "
                f"Its trials are {min(numbers, default=0)}..{max(numbers, default=-1)}."
            )
        trial = study.trials[number]
        if trial.state != TrialState.COMPLETE:
            raise UserError(
                f"a trial to hand over must be COMPLETE, but trial {number} is {trial.state.name}. "
                "Pick another with lorasweep trials --state complete."
            )
    twin = TrialRecord.of(trial).duplicate_of
    if twin is not None:
        trial = study.trials[twin]
    return trial
