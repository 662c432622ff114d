"""The command line's choices and defaults, where the parser reads them: this module imports nothing,
so `lorasweep --help` loads no library of the study or the trial."""

from __future__ import annotations

DEFAULT_MAX_FAILURES = 5  # failed trials in one run before the sweep stops
PRECISIONS = ("fp32", "int8", "int4")  # the ONNX exports promotion can make; fp32 always
# `trials --state` words -> Optuna's trial states
STATES = {
    "complete": "COMPLETE",
    "pruned": "PRUNED",
    "failed": "FAIL",
    "running": "RUNNING",
    "waiting": "WAITING",
}
