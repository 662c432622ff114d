"""The study side of lorasweep: sweep files, the Optuna study, the MLflow record, the CLI."""

from .errors import SweepError, UserError
from .study import RunOptions, load_study, run_sweep
from .sweep import Sweep, load_sweep

__all__ = ["RunOptions", "Sweep", "SweepError", "UserError", "load_study", "load_sweep", "run_sweep"]
