"""Ctrl-C and SIGTERM stop a sweep once, and the sweep then closes what it opened.

The first signal raises KeyboardInterrupt where the sweep is (mid-training, as a rule). Closing the
trial after it takes a moment: its scratch folder removed, its Optuna trial and its MLflow run
marked, the parent run closed. A second signal raised there too would cut that short, and an
impatient Ctrl-C Ctrl-C Ctrl-C left a trial FAIL with its MLflow run RUNNING, untagged, and an empty
scratch folder. So while a sweep runs, later signals are noted on stderr and otherwise ignored; the
previous handlers come back when it returns or raises. (A sweep that will not close can still be
killed with SIGKILL: its trial is then recovered as a dead worker's, see _recovery.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def first_only() -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM raises KeyboardInterrupt; later ones do not.
    Only signals that would raise KeyboardInterrupt anyway are taken over (Python's default for
    SIGINT; the CLI's for SIGTERM), and only in the main thread, where Python runs handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = 0

    def handler(signum: int, frame: object) -> None:
        nonlocal received
        received += 1
        if received == 1:
            raise KeyboardInterrupt
        if received == 2:  # said once; os.write, as print is not safe inside a signal handler
            os.write(2, b"stopping: closing the running trial and its MLflow runs first\n")

    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for sig, before in previous.items():
        if before is signal.default_int_handler:
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            if before is signal.default_int_handler:
                signal.signal(sig, before)
