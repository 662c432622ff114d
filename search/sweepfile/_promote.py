"""The sweep file's promote section: which trial a study hands over (the rule, see selection.py), under
what name, and the limits of the parity gate its ONNX exports must pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lorasweep.objectives import METRICS

from ..choices import PRECISIONS
from ..errors import Problems, unknown_key
from ..selection import Criterion
from ._typed import name_problem


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
