"""Which trial a study hands over: the best, or, with several objectives, one trial of the Pareto
front chosen by the rule `promote.select`.

The rule is a list of metrics, each with a tolerance in the metric's own units. Among the front,
keep the trials within the tolerance of the best on the first metric; among those, the ones
within the tolerance of the best on the next; and so on. The best on the last metric wins.

Ties. Trials that tie on the objective (with several, on the rule's last metric) are told apart
by their eval loss, lower wins, and then by trial number, lower wins: everywhere a best is
picked (`best`, `promote`, `--top K` and an adapter bundle's "best first" order). A trial
without an eval loss comes after those with one. Optuna's own `study.best_trial` breaks a tie by
trial number alone, so it is never asked here.

The base. A trial is handed over only if it beats the base model (its scores, taken before the
first trial) on the objective: strictly, an equal score is no gain. With several objectives, it
must beat the base on at least one of them. A study without base scores (made before they were
kept, or with base scoring off) is not checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from lorasweep.objectives import METRICS

from .errors import UserError
from .progress import objective_names
from .record import StudyRecord, TrialRecord

TIE_BREAKER = "eval_loss"  # lower wins; then the lower trial number


@dataclass(frozen=True)
class Criterion:
    metric: str
    tolerance: float = 0.0  # in the metric's units: 0.01 of f1 keeps trials within 0.01 of the best


def choose(study: optuna.Study, rule: tuple[Criterion, ...]) -> tuple[FrozenTrial | None, list[FrozenTrial]]:
    """(the chosen trial, the candidates it was chosen from: the best trial or the Pareto front)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None, []
    if len(study.directions) == 1:
        best = _ranked(study)[0]
        return best, [best]
    front = sorted(study.best_trials, key=lambda t: t.number)
    return _by_rule(study, rule, front), front


def top(study: optuna.Study, rule: tuple[Criterion, ...], k: int) -> list[FrozenTrial]:
    """The k trials an adapter bundle hands over, best first: with one objective the best complete
    trials, with several the Pareto front in the order the rule picks from it. A duplicate
    configuration stands for the trial it copied, which is counted once."""
    if len(study.directions) == 1:
        ranked = _ranked(study)
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
        candidates = sorted(candidates, key=lambda t: (sign * _metrics(t)[last], *_tie_key(t)))
    else:
        candidates = sorted(candidates, key=_tie_key)
    return candidates[0]


def _ranked(study: optuna.Study) -> list[FrozenTrial]:
    """One objective: the complete trials, best first, ties broken by eval loss, then number."""
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    scored = [(t.value, t) for t in complete if t.value is not None]  # a complete trial has its value
    return [t for _, t in sorted(scored, key=lambda vt: (sign * vt[0], *_tie_key(vt[1])))]


def _tie_key(trial: FrozenTrial) -> tuple[float, int]:
    loss = _metrics(trial).get(TIE_BREAKER)
    return (loss if loss is not None and not math.isnan(loss) else math.inf, trial.number)


def tie_note(study: optuna.Study, rule: tuple[Criterion, ...], chosen: FrozenTrial) -> str | None:
    """How a tie on the deciding figure was broken, for `best` to say: "a tie on f1=0 with trials
    1, 2 broken by eval_loss (lower wins)"; None when no other candidate had the same figure."""
    names = list(objective_names(study))
    if len(study.directions) == 1:
        metric, candidates = names[0], _ranked(study)
        figure = chosen.value
        tied = [t for t in candidates if t.value == figure and t.number != chosen.number]
    else:
        rule = rule or tuple(Criterion(m) for m in names)
        metric = rule[-1].metric
        figure = _metrics(chosen).get(metric)
        if figure is None:
            return None
        tied = [
            t for t in study.best_trials if _metrics(t).get(metric) == figure and t.number != chosen.number
        ]
    tied = [t for t in tied if TrialRecord.of(t).duplicate_of is None]  # a duplicate stands for its original
    if not tied:
        return None
    mine = _tie_key(chosen)[0]
    deciders = [TIE_BREAKER] if any(_tie_key(t)[0] != mine for t in tied) else []
    deciders += ["trial number"] if any(_tie_key(t)[0] == mine for t in tied) else []
    by = ", then ".join(deciders) + " (lower wins)"
    others = ", ".join(str(t.number) for t in sorted(tied, key=lambda t: t.number))
    return f"a tie on {metric}={figure:.4g} with trial{'s' if len(tied) > 1 else ''} {others} broken by {by}"


@dataclass(frozen=True)
class NoGain:
    """The chosen trial does not beat the base model on the objective (or on any of several)."""

    trial: int
    scores: str  # the trial's figures: "f1=0"
    base: str  # the base's: "f1=0"

    def line(self) -> str:
        return (
            f"best trial {self.trial} {self.scores} does not beat the base model ({self.base}): no trial "
            "learned; see docs/failures.md#no-trial-beats-the-base-model"
        )


def no_gain(study: optuna.Study, trial: FrozenTrial) -> NoGain | None:
    """None when `trial` beats the base model on the objective (with several objectives: on at least
    one), or when the study kept no base scores to compare with; else what the two scored."""
    base = StudyRecord.of(study).base_metrics
    if not base:
        return None
    names = objective_names(study)
    kept = _metrics(trial)
    compared = []
    for i, metric in enumerate(names):
        value = kept.get(metric, trial.values[i] if trial.values else None)
        if metric not in base or value is None:
            continue
        maximize = study.directions[i] == optuna.study.StudyDirection.MAXIMIZE
        if (value > base[metric]) if maximize else (value < base[metric]):
            return None
        compared.append((metric, value, base[metric]))
    if not compared:
        return None  # the base was not scored on the objective: nothing to compare
    return NoGain(
        trial.number,
        " ".join(f"{m}={v:.4g}" for m, v, _ in compared),
        " ".join(f"{m}={b:.4g}" for m, _, b in compared),
    )


def require_gain(study: optuna.Study, trial: FrozenTrial) -> None:
    """Refuse to hand over a trial that does not beat the base model (promote, unless told to)."""
    found = no_gain(study, trial)
    if found is not None:
        raise UserError(
            f"a trial to promote must beat the base model on the objective, but got trial={found.trial} "
            f"{found.scores}, base model {found.base}: no trial learned. Sweep longer or check the data "
            "(docs/failures.md#no-trial-beats-the-base-model), or add --allow-no-gain (or --force) to "
            "promote it anyway."
        )


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
