"""The command line's choices and defaults, where the parser reads them: this module imports nothing,
so `lorasweep --help` loads no library of the study or the trial. The export precisions are
precisions.py's."""

from __future__ import annotations

DEFAULT_MAX_FAILURES = 5  # failed trials in one run before the sweep stops
# `trials --state` words -> Optuna's trial states
STATES = {
    "complete": "COMPLETE",
    "pruned": "PRUNED",
    "failed": "FAIL",
    "running": "RUNNING",
    "waiting": "WAITING",
}

# `--progress`: how a sweep shows its trials. auto: a bar on a terminal (a widget in a notebook),
# plain lines otherwise (a log file, CI); none: only the result and errors.
PROGRESS_MODES = ("auto", "bar", "lines", "none")

__all__ = ["DEFAULT_MAX_FAILURES", "PROGRESS_MODES", "STATES"]
