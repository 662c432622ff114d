"""How a sweep's OpenMP threads wait: passively when other programs keep a core busy, so that a
machine shared with other work slows a trial by the share of the cores it lost, not several times
over; as OpenMP's default has them (a short spin) on a quiet machine, where that is faster.

PyTorch's CPU kernels run on OpenMP threads that meet at the end of every parallel operation. By
default a thread that arrives first spins on its core before it sleeps (GNU OpenMP for 300,000
rounds, Intel's for 200 ms). When another program holds one of the cores, the thread that shares
that core with it spends its share of the core spinning, and each of a trial's thousands of small
operations then waits for it: a demo trial took 3 times its quiet time beside one busy process
(6-10 times on a machine under more load). `OMP_WAIT_POLICY=PASSIVE` makes a waiting thread sleep at
once, which gives the core back: beside the busy process the same trial took 1.5 times its quiet
time. On a quiet machine the passive wait costs instead: every operation wakes a sleeping thread, and
the demo trial took 1.7 times as long as with the spin (benchmarks/shared_machine.py; the table is in
docs/performance.md). So the wait is chosen by what the machine is doing when the sweep starts.

OpenMP reads the variable once, when its library loads, which is when torch is first imported. So
`run`, `resume` and `worker` decide before anything imports torch, and the worker processes a sweep
starts inherit the decision. A variable the user set (`OMP_WAIT_POLICY` itself, or GNU's
`GOMP_SPINCOUNT` or Intel's `KMP_BLOCKTIME`, which decide the same wait) is kept as it is: that is
how to choose either wait yourself, e.g. `OMP_WAIT_POLICY=PASSIVE` for a sweep on a machine that
other jobs will join later.
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
# Other programs' work, in cores, from which the machine counts as shared: half a core busy means a
# thread of the sweep's would share its core with it much of the time.
SHARED_FROM_CORES = 0.5
SAMPLE_S = 0.3  # how long the machine is watched: long enough to see a busy loop, short beside a sweep


def busy_cores(seconds: float = SAMPLE_S) -> float:
    """How many cores' worth of work other programs do now: this process sleeps while psutil
    watches every core for `seconds`, so what it sees busy is someone else's."""
    import psutil

    return psutil.cpu_percent(interval=seconds) / 100 * (psutil.cpu_count() or 1)


def wait_passively(
    env: MutableMapping[str, str] = os.environ,
    log: Callable[[str], None] | None = None,
    busy: Callable[[], float] = busy_cores,
) -> bool:
    """Set `OMP_WAIT_POLICY=PASSIVE` in `env` when other programs keep a core busy (`busy()`, in
    cores, reaches SHARED_FROM_CORES), unless the user set how OpenMP threads wait.

    Returns whether this process's threads will wait passively. False also when torch was imported
    before this call (a notebook that imported it first): its OpenMP has read its settings already
    and nothing can change them in this process. `log`, if given, then gets one line saying what to
    do (set OMP_WAIT_POLICY=PASSIVE before importing torch). Worker processes started from here
    still inherit the variable, and a later call says nothing (the variable is set by then)."""
    if any(name in env for name in USER_WAIT_SETTINGS):
        return env.get(WAIT_POLICY, "").strip().upper() == PASSIVE
    if busy() < SHARED_FROM_CORES:
        return False  # a quiet machine: OpenMP's own short spin is the faster wait
    env[WAIT_POLICY] = PASSIVE
    if "torch" not in sys.modules:
        return True
    if log is not None:
        log(
            "note: this machine is busy with other work, and torch was imported before lorasweep could "
            "set OMP_WAIT_POLICY=PASSIVE, so its threads spin while they wait and a busy core slows each "
            "trial several times over; set os.environ['OMP_WAIT_POLICY'] = 'PASSIVE' before importing "
            "torch (worker processes get it)"
        )
    return False
