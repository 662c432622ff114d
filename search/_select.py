"""The sweep file's promote section: which trial a study hands over, under what name, and the
limits of the parity gate its ONNX exports must pass.

Which trial: the best, or, with several objectives, one trial of the Pareto front chosen by the rule
`promote.select`.

The rule is a list of metrics, each with a tolerance in the metric's own units. Among the front,
keep the trials within the tolerance of the best on the first metric; among those, the ones
within the tolerance of the best on the next; and so on. The best on the last metric wins, and
the lower trial number breaks a tie.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lorasweep.objectives import METRICS

from ._choices import PRECISIONS
from ._typed import name_problem, unknown_key
from .errors import Problems, UserError
from .record import TrialRecord


@dataclass(frozen=True)
class Criterion:
    metric: str
    tolerance: float = 0.0  # in the metric's units: 0.01 of f1 keeps trials within 0.01 of the best


@dataclass(frozen=True)
class PromoteSpec:
    select: tuple[Criterion, ...] = ()  # with several metrics: which Pareto trial is handed over
    model_name: str | None = None  # the registered MLflow model; None: the study's name
    precisions: tuple[str, ...] = PRECISIONS  # ONNX exports made and gated
    max_logit_diff: float = 1e-3  # fp32 ONNX against PyTorch: the largest |logit difference|
    # How far each export's eval perplexity may move from PyTorch's, relative (0.01 is 1%).
    max_perplexity_change: dict[str, float] = field(
        default_factory=lambda: {"fp32": 0.01, "int8": 0.05, "int4": 0.15}
    )
    # How far the rebuilt PyTorch model's eval loss may move from the one its trial recorded,
    # relative: a model that does not reproduce its own trial is not handed over. Measured on the
    # tiny base: a CPU fp32 trial reproduces exactly, one trained and scored in bf16 moves 0.04%; an
    # adapter with every lora_B negated, +2000%.
    max_eval_loss_change: float = 0.01


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
        ranked = sorted(complete, key=lambda t: (sign * t.value, t.number))
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
        candidates = [t for t, v in zip(scored, values) if abs(v - best) <= criterion.tolerance]
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


def parse_promote(raw: Any, problems: Problems) -> PromoteSpec:
    """The promote section; every problem goes to `problems`."""
    if raw is None:
        return PromoteSpec()
    if not isinstance(raw, dict):
        problems.add(("promote",), f"promote must be a mapping, but got {raw!r}.")
        return PromoteSpec()
    defaults, values = PromoteSpec(), {}
    keys = (
        "select",
        "model_name",
        "precisions",
        "max_logit_diff",
        "max_perplexity_change",
        "max_eval_loss_change",
    )
    for key in raw:
        if key not in keys:
            problems.add(("promote", key), unknown_key("a key of promote", key, keys))
    values["select"] = _parse_rule(raw.get("select", []), problems)
    name = raw.get("model_name")
    # It names folders too (exports/NAME/vK, the .promote-NAME.lock): the study's name rule, whole.
    if name is not None and (wrong := name_problem("promote.model_name", name)) is not None:
        problems.add(("promote", "model_name"), wrong)
    values["model_name"] = name
    precisions = raw.get("precisions", list(PRECISIONS))
    if not isinstance(precisions, list) or not precisions or set(map(str, precisions)) - set(PRECISIONS):
        problems.add(
            ("promote", "precisions"),
            f"promote.precisions must be a list of {', '.join(PRECISIONS)}, but got precisions={precisions!r}.",
        )
        precisions = list(PRECISIONS)
    values["precisions"] = ("fp32", *(p for p in PRECISIONS[1:] if p in precisions))  # fp32: the reference
    tolerance = raw.get("max_logit_diff", defaults.max_logit_diff)
    if not _number(tolerance) or tolerance <= 0:
        problems.add(
            ("promote", "max_logit_diff"),
            f"promote.max_logit_diff must be a number > 0, but got max_logit_diff={tolerance!r}. "
            "fp32 exports usually differ by 1e-5 or less.",
        )
        tolerance = defaults.max_logit_diff
    values["max_logit_diff"] = float(tolerance)
    changes = raw.get("max_perplexity_change", {})
    if not isinstance(changes, dict) or any(
        p not in PRECISIONS or not _number(v) or v < 0 for p, v in changes.items()
    ):
        problems.add(
            ("promote", "max_perplexity_change"),
            "promote.max_perplexity_change must map precisions to relative changes >= 0, but got "
            f"max_perplexity_change={changes!r}. Example: {{int8: 0.05, int4: 0.15}} (5% and 15%).",
        )
        changes = {}
    values["max_perplexity_change"] = {**defaults.max_perplexity_change, **changes}
    loss_change = raw.get("max_eval_loss_change", defaults.max_eval_loss_change)
    if not _number(loss_change) or loss_change < 0:
        problems.add(
            ("promote", "max_eval_loss_change"),
            "promote.max_eval_loss_change must be a relative change >= 0, but got "
            f"max_eval_loss_change={loss_change!r}. Example: 0.01 (1%); raise it for trials scored in bf16.",
        )
        loss_change = defaults.max_eval_loss_change
    values["max_eval_loss_change"] = float(loss_change)
    return PromoteSpec(**values)


def _parse_rule(entries: Any, problems: Problems) -> tuple[Criterion, ...]:
    """promote.select: a list of metrics, each a name or {metric, tolerance}."""
    example = "Example: select: [{metric: f1, tolerance: 0.01}, eval_loss]."
    if not isinstance(entries, list):
        problems.add(("promote", "select"), f"promote.select must be a list, but got {entries!r}. {example}")
        return ()
    rule = []
    for i, entry in enumerate(entries):
        item = {"metric": entry} if isinstance(entry, str) else entry
        where = ("promote", "select", i)
        if not isinstance(item, dict) or set(item) - {"metric", "tolerance"}:
            problems.add(
                where,
                f"each promote.select entry must be a metric or {{metric, tolerance}}, but got {entry!r}. {example}",
            )
        elif item.get("metric") not in METRICS:
            problems.add(where, unknown_key("a promote.select metric", item.get("metric"), METRICS))
        elif not _number(tol := item.get("tolerance", 0.0)) or tol < 0:
            problems.add(
                where, f"a tolerance must be a number >= 0 in the metric's units, but got tolerance={tol!r}."
            )
        else:
            rule.append(Criterion(item["metric"], float(tol)))
    return tuple(rule)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
