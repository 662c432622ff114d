"""The command line's choices and defaults, where the parser reads them: this module imports only
precisions.py (which imports nothing heavy), so `lorasweep --help` loads no library of the study or
the trial."""

from __future__ import annotations

from .precisions import PRECISIONS  # the ONNX exports promote can make, fp32 first: precisions.py's

DEFAULT_MAX_FAILURES = 5  # failed trials in one run before the sweep stops
# `trials --state` words -> Optuna's trial states
STATES = {
    "complete": "COMPLETE",
    "pruned": "PRUNED",
    "failed": "FAIL",
    "running": "RUNNING",
    "waiting": "WAITING",
}

__all__ = ["DEFAULT_MAX_FAILURES", "PRECISIONS", "STATES"]
