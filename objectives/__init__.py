"""The trial side of lorasweep: what one trial does (data -> LoRA fine-tune -> metrics), and all
it knows: the hyperparameter names and where they go, their defaults, the metrics, loading a
finished trial's model for hand-over.

It knows nothing of Optuna storage, MLflow or the CLI; search/ drives it through `TrialRunner`
(runner.py: the lifecycle) and this module's names only. Importing them does not import torch:
the names that need it (`Recipe`, hand-over, scoring, data checks) load it on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._knobs import cache_root  # lorasweep's cache folder, shared with the study side
from ._typing import check_type, did_you_mean
from .config import (
    BUILTIN_DATA_PREFIX,
    CURVE_METRICS,
    DATA_SUFFIXES,
    GENERATION_METRICS,
    METRICS,
    WRONG_KIND_OF_FILE,
    InputError,
    TrialSpec,
    curve_metric,
)
from .logs import libraries_quieted, quiet_libraries
from .metric_paths import (
    MetricSource,
    importable_source,
    load_metric,
    metric_name_problem,
    metric_problems,
    why_not_importable,
)
from .params import (
    BATCH_SIZE,
    DEFAULTS,
    canonical,
    fixed_problems,
    spellings,
    target_of,
    trial_spec,
    type_problem,
    unknown_name_message,
    valid_names_text,
)
from .runner import (
    BaseFootprint,
    CurveHook,
    LrRangeSpec,
    LrRangeTester,
    MetricFn,
    TrialResult,
    TrialRunner,
    TrialTimedOut,
)

if TYPE_CHECKING:
    from .data import DataShape, check_data
    from .handover import TrialModel, eval_inputs, load_trial_model
    from .model import adapter_base_identity, base_identity
    from .recipe import Recipe
    from .scoring import perplexity, summed_nll
    from .specs import USER_DATA, DataSpec, EvalSpec, MetricPath, ModelSpec

# Names whose modules import torch, transformers, datasets or pydantic: loaded when first asked for.
_HEAVY = {
    "Recipe": "recipe",
    "DataShape": "data",
    "check_data": "data",
    "base_identity": "model",
    "adapter_base_identity": "model",
    "TrialModel": "handover",
    "eval_inputs": "handover",
    "load_trial_model": "handover",
    "perplexity": "scoring",
    "summed_nll": "scoring",
    # pydantic models: the command line's --help should not wait for pydantic
    "ModelSpec": "specs",
    "DataSpec": "specs",
    "EvalSpec": "specs",
    "MetricPath": "specs",
    "USER_DATA": "specs",
}


def __getattr__(name: str) -> Any:
    if name in _HEAVY:
        return getattr(importlib.import_module(f".{_HEAVY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BATCH_SIZE",
    "BUILTIN_DATA_PREFIX",
    "CURVE_METRICS",
    "DATA_SUFFIXES",
    "DEFAULTS",
    "GENERATION_METRICS",
    "METRICS",
    "USER_DATA",
    "WRONG_KIND_OF_FILE",
    "BaseFootprint",
    "CurveHook",
    "DataShape",
    "DataSpec",
    "EvalSpec",
    "InputError",
    "LrRangeSpec",
    "LrRangeTester",
    "MetricFn",
    "MetricPath",
    "MetricSource",
    "ModelSpec",
    "Recipe",
    "TrialModel",
    "TrialResult",
    "TrialRunner",
    "TrialSpec",
    "TrialTimedOut",
    "adapter_base_identity",
    "base_identity",
    "cache_root",
    "canonical",
    "check_data",
    "check_type",
    "curve_metric",
    "did_you_mean",
    "eval_inputs",
    "fixed_problems",
    "importable_source",
    "libraries_quieted",
    "load_metric",
    "load_trial_model",
    "metric_name_problem",
    "metric_problems",
    "perplexity",
    "quiet_libraries",
    "spellings",
    "summed_nll",
    "target_of",
    "trial_spec",
    "type_problem",
    "unknown_name_message",
    "valid_names_text",
    "why_not_importable",
]
