"""Ctrl-C and SIGTERM stop a sweep once, and the sweep then closes what it opened.

The first signal raises KeyboardInterrupt where the sweep is (mid-training, as a rule). Closing the
trial after it takes a moment: its scratch folder removed, its Optuna trial and its MLflow run
marked, the parent run closed. A second signal raised there too would cut that short, and an
impatient Ctrl-C Ctrl-C Ctrl-C left a trial FAIL with its MLflow run RUNNING, untagged, and an empty
scratch folder. So while a sweep runs, later signals are noted on stderr and otherwise ignored; the
previous handlers come back when it returns or raises. (A sweep that will not close can still be
killed with SIGKILL: its trial is then recovered as a dead worker's, see recovery.py.)

A KeyboardInterrupt raised while Python runs a finalizer or a weakref callback is swallowed
("Exception ignored in ..."): a sweep whose one signal landed there ran on to the end, exit 0,
through Ctrl-C Ctrl-C Ctrl-C (reproduced with an object whose __del__ is running). Python hands such
an exception to sys.unraisablehook, so while a sweep runs that hook sends the signal again a moment
later: it is then raised in the sweep's own code, as the first would have been.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def first_only() -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM raises KeyboardInterrupt (again if it was
    swallowed, see the module's docstring); later ones do not.
    Only signals that would raise KeyboardInterrupt anyway are taken over (Python's default for
    SIGINT; the CLI's for SIGTERM), and only in the main thread, where Python runs handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = 0
    swallowed = 0

    def handler(signum: int, frame: object) -> None:
        nonlocal received
        received += 1
        if received == 1:
            raise Interrupted(signum)
        if received == 2:  # said once; os.write, as print is not safe inside a signal handler
            os.write(2, b"stopping: closing the running trial and its MLflow runs first\n")

    def unraisable(info: sys.UnraisableHookArgs) -> None:
        nonlocal received, swallowed
        if isinstance(info.exc_value, Interrupted) and swallowed < 3:
            swallowed += 1  # a bound: a signal that keeps landing in finalizers is not sent forever
            received = 0  # the signals that came after it closed nothing: the next one raises
            # Sent from another thread a moment later: sent from here, the handler would raise at
            # once, inside the finalizer that is still running, and be swallowed again.
            resend = threading.Timer(0.01, os.kill, (os.getpid(), info.exc_value.signum))
            resend.daemon = True
            resend.start()
            return
        unraisable_before(info)

    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    if not any(before is signal.default_int_handler for before in previous.values()):
        yield  # nested in another first_only, or the caller handles both signals itself
        return
    unraisable_before, sys.unraisablehook = sys.unraisablehook, unraisable
    for sig, before in previous.items():
        if before is signal.default_int_handler:
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            if before is signal.default_int_handler:
                signal.signal(sig, before)
        sys.unraisablehook = unraisable_before


class Interrupted(KeyboardInterrupt):
    """The KeyboardInterrupt first_only raises: it names its signal (a trial's error reads
    "Interrupted: SIGINT"), to send it again if swallowed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
