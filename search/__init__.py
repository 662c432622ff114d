"""The study side of lorasweep: sweep files, the Optuna study, the MLflow record, the CLI.

cli.py        the commands; each reads a sweep file or a stored study and calls one room below
api.py        the same operations for Python (`import lorasweep`), raising instead of printing
sweepfile/    a sweep file, checked whole, as a frozen Sweep
launch.py     run_sweep / join_sweep: the one setup every process that runs trials goes through
objective.py  one Optuna trial: sample -> MLflow run -> the trial side -> record
failures.py   when failed trials stop the sweep
parent.py     the study's MLflow parent run: its params, summary and plots
record.py     every key stored on studies, trials and MLflow runs, read and written there only
storage.py    Optuna storage URLs: open, load, find
tracking.py   the MLflow client calls
handover/     promote and export: ONNX exports, the parity gate, MLflow's registry
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import SweepError, UserError

if TYPE_CHECKING:
    from .launch import RunOptions, run_sweep
    from .storage import load_study
    from .sweepfile import Sweep, load_sweep

# Loaded when first asked for: the CLI imports this package on every command, `--help` included.
_LAZY = {
    "RunOptions": "launch",
    "run_sweep": "launch",
    "load_study": "storage",
    "Sweep": "sweepfile",
    "load_sweep": "sweepfile",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["RunOptions", "Sweep", "SweepError", "UserError", "load_study", "load_sweep", "run_sweep"]
