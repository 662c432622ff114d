"""Which trial a study hands over: its best, or, with several objectives, one trial of the Pareto
front chosen by the sweep file's rule (`promote.select`).

The rule is a list of metrics, each with a tolerance in the metric's own units. Among the front,
keep the trials within the tolerance of the best on the first metric; among those, the ones
within the tolerance of the best on the next; and so on. The best on the last metric wins, and
the lower trial number breaks a tie.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives import METRICS


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
    names = list(study.metric_names or [])
    rule = rule or tuple(Criterion(m) for m in names)
    candidates = front
    for criterion in rule:
        maximize = _maximize(study, names, criterion.metric)
        scored = [t for t in candidates if criterion.metric in _metrics(t)]
        if not scored:
            continue
        values = [_metrics(t)[criterion.metric] for t in scored]
        best = max(values) if maximize else min(values)
        candidates = [t for t, v in zip(scored, values) if abs(v - best) <= criterion.tolerance]
    last = rule[-1].metric if rule else None
    if last is not None and all(last in _metrics(t) for t in candidates):
        sign = -1.0 if _maximize(study, names, last) else 1.0
        candidates = sorted(candidates, key=lambda t: (sign * _metrics(t)[last], t.number))
    return candidates[0], front


def describe(rule: tuple[Criterion, ...], names: list[str]) -> str:
    rule = rule or tuple(Criterion(m) for m in names)
    parts = [f"{c.metric}" + (f" within {c.tolerance:g} of the best" if c.tolerance else "") for c in rule]
    return "best " + ", then ".join(parts)


def _maximize(study: optuna.Study, names: list[str], metric: str) -> bool:
    if metric in names:
        return study.directions[names.index(metric)] == optuna.study.StudyDirection.MAXIMIZE
    return METRICS.get(metric) == "maximize"


def _metrics(trial: FrozenTrial) -> dict[str, float]:
    return trial.user_attrs.get("metrics", {})
