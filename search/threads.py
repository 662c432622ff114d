"""How a sweep's OpenMP threads wait: passively, so that a machine shared with other work slows a
trial by the share of the cores it lost, not several times over.

PyTorch's CPU kernels run on OpenMP threads that meet at the end of every parallel operation. By
default the first thread to arrive spins on its core waiting for the others (GNU OpenMP for 300,000
rounds, Intel's for 200 ms; `OMP_WAIT_POLICY=ACTIVE` spins without end). When another program holds
one of the cores, the thread that shares that core with it gets a slice of it only while the others
spin on theirs, and each of a trial's thousands of small operations waits for it: a demo trial took
6-10 times its quiet time beside one busy process. `OMP_WAIT_POLICY=PASSIVE` makes a waiting thread
sleep at once (GNU OpenMP spins 0 rounds; Intel's OpenMP sets its block time to 0), which gives the
core back.

OpenMP reads the variable once, when its library loads, which is when torch is first imported. So
`run`, `resume` and `worker` set it before anything imports torch, and the worker processes a sweep
starts inherit it. A variable the user set (`OMP_WAIT_POLICY` itself, or GNU's `GOMP_SPINCOUNT` or
Intel's `KMP_BLOCKTIME`, which decide the same wait) is kept as it is: that is how to opt out.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, MutableMapping

WAIT_POLICY = "OMP_WAIT_POLICY"
PASSIVE = "PASSIVE"
# Variables that set how long an OpenMP thread spins before it sleeps: one set by the user is their
# choice (GOMP_SPINCOUNT outranks OMP_WAIT_POLICY in GNU OpenMP, KMP_BLOCKTIME in Intel's).
USER_WAIT_SETTINGS = (WAIT_POLICY, "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def wait_passively(
    env: MutableMapping[str, str] = os.environ, log: Callable[[str], None] | None = None
) -> bool:
    """Set `OMP_WAIT_POLICY=PASSIVE` in `env` unless the user set how OpenMP threads wait.

    Returns False when this process's threads will not wait passively for it: the user chose
    otherwise, or torch was imported before this call (a notebook that imported it first). Then its
    OpenMP has read its settings already and nothing can change them in this process: `log`, if
    given, gets one line saying what to do (set OMP_WAIT_POLICY=PASSIVE before importing torch).
    Worker processes started from here still inherit the variable, and a later call says nothing
    (the variable is set by then)."""
    if any(name in env for name in USER_WAIT_SETTINGS):
        return env.get(WAIT_POLICY, "").strip().upper() == PASSIVE
    env[WAIT_POLICY] = PASSIVE
    if "torch" not in sys.modules:
        return True
    if log is not None:
        log(
            "note: torch was imported before lorasweep set OMP_WAIT_POLICY=PASSIVE, so its threads "
            "spin while they wait and a busy core slows each trial several times over; set "
            "os.environ['OMP_WAIT_POLICY'] = 'PASSIVE' before importing torch (worker processes get it)"
        )
    return False
