"""The sweep file's promote section: which trial a study hands over (the rule, see selection.py), under
what name, and the limits of the parity gate its ONNX exports must pass. Its keys, defaults and
bounds are the `Promote` model's; the precisions and their default tolerances are search/precisions.py's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import Problems
from ..precisions import PRECISIONS, default_max_perplexity_change
from ..selection import Criterion
from ._models import Promote, check, name_problem

_DEFAULTS = Promote.model_fields  # one default per key: the sweep file's


@dataclass(frozen=True)
class PromoteSpec:
    select: tuple[Criterion, ...] = ()  # with several metrics: which Pareto trial is handed over
    model_name: str | None = None  # the registered MLflow model; None: the study's name
    precisions: tuple[str, ...] = PRECISIONS  # ONNX exports made and gated
    max_logit_diff: float = _DEFAULTS["max_logit_diff"].default  # fp32 ONNX against PyTorch: max |logit diff|
    # How far each export's eval perplexity may move from PyTorch's, relative (0.01 is 1%).
    max_perplexity_change: dict[str, float] = field(default_factory=default_max_perplexity_change)
    # How far the rebuilt PyTorch model's eval loss may move from the one its trial recorded,
    # relative: a model that does not reproduce its own trial is not handed over. Measured on the
    # tiny base: a CPU fp32 trial reproduces exactly, one trained and scored in bf16 moves 0.04%; an
    # adapter with every lora_B negated, +2000%.
    max_eval_loss_change: float = _DEFAULTS["max_eval_loss_change"].default


def parse_promote(raw: Any, problems: Problems) -> PromoteSpec:
    """The promote section; every problem goes to `problems`."""
    given = check(Promote, {} if raw is None else raw, problems, ("promote",)) or Promote()
    name = given.model_name
    # It names folders too (exports/NAME/vK, the .promote-NAME.lock): the study's name rule, whole.
    if name is not None and (wrong := name_problem("promote.model_name", name)) is not None:
        problems.add(("promote", "model_name"), wrong)
    return PromoteSpec(
        select=tuple(
            Criterion(c, 0.0) if isinstance(c, str) else Criterion(c.metric, c.tolerance)
            for c in given.select
        ),
        model_name=name,
        precisions=("fp32", *(p for p in PRECISIONS[1:] if p in given.precisions)),  # fp32: the reference
        max_logit_diff=given.max_logit_diff,
        max_perplexity_change={**default_max_perplexity_change(), **given.max_perplexity_change},
        max_eval_loss_change=given.max_eval_loss_change,
    )
