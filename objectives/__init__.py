"""The trial side of lorasweep: what one trial does (data -> LoRA fine-tune -> metrics).

It knows nothing of Optuna storage, MLflow or the CLI; search/ drives it through `Worker`.
"""

from .config import GENERATION_METRICS, METRICS, DataSpec, EvalSpec, InputError, ModelSpec, TrialSpec
from .recipe import Report, TrialResult, Worker

__all__ = [
    "GENERATION_METRICS",
    "METRICS",
    "DataSpec",
    "EvalSpec",
    "InputError",
    "ModelSpec",
    "Report",
    "TrialResult",
    "TrialSpec",
    "Worker",
]
