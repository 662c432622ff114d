"""What this machine can hold and do: how many local workers fit (`run --workers N`), and whether a
sweep's step budget is absurd for its time budget (`validate`).

How many workers fit. Each worker is a process of its own, so it needs a core (worker_env gives
each at least one thread) and this much memory, an upper estimate:

    libraries    RUNTIME_BYTES: Python with torch, transformers, PEFT, MLflow and Optuna loaded, the
                 data and the tokenizer (a worker training the built-in tiny base peaks at ~800 MiB)
    weights      the base as loaded (objectives' BaseFootprint.bytes)
    a batch      what a training step keeps for its backward pass, at the largest batch the sweep
                 samples and data.max_length tokens a row (rows are often shorter):
                 tokens x layers x hidden x ACTIVATION_BYTES (fp32, Korthikanti et al.'s 34 bytes a
                 value in fp16, doubled), plus the logits: tokens x vocab x LOGIT_BYTES (the logits,
                 their softmax in the loss and its gradient, fp32)

On a GPU the weights and the batch live in GPU memory, not here: only the libraries count (GPU
memory is not estimated). The cores are those this process may run on (its affinity, and a
container's CPU quota); the memory is what the system says is available now (and what a
container's limit leaves). The estimate is in one place because `--workers N` is checked with it and
`--workers auto` chooses with it.

How many workers `auto` starts (choose_workers). On a CPU a pool of one-thread processes trains
a small base's trials faster than one process's threads do (its operations are too small to split
well), but each worker pays a process start, the libraries and the base loaded again: on 2 cores
and a quiet machine, 4 tiny trials took 57 s as 1 process x 2 threads and 90 s as 2 x 1
(docs/parallel.md). So a base below SMALL_BASE_PARAMS gets one process per core only for a sweep of
POOL_MIN_TRIALS trials or more, where the per-trial gain can repay the start; a larger base, whose
matrices keep every thread busy, and a short sweep get one process with all the threads. On GPUs,
one worker per visible GPU. Either way no more than fit the memory (largest_workers), nor than
trials are left; one worker runs in the `run` process itself.

An absurd budget. No trial runs faster than GUESSED_STEPS_PER_S, a rate above what the bases that
lorasweep trains reach on a CPU (the built-in tiny base: ~10 steps a second on 2 cores). A budget
whose time at that rate is still far beyond the study's timeout (or beyond a week, without one) is
noted, not refused: the rate is a guess.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lorasweep.objectives import BaseFootprint

RUNTIME_BYTES = 800 * 2**20
ACTIVATION_BYTES = 68
LOGIT_BYTES = 12
GUESSED_STEPS_PER_S = 100.0
# Below this many parameters a long sweep trains soonest as one one-thread process per core; the
# SmolLM2-135M shape was not measured to the end, so larger bases keep one process (conservative).
SMALL_BASE_PARAMS = 50_000_000
# Trials left from which a pool's faster trials repay its workers' start: 33 s more for the pool on 4
# tiny trials (2 cores, quiet) against 121 -> 92 s of trials for 8 in an earlier run (~3.6 s a trial).
POOL_MIN_TRIALS = 16
FAR_BEYOND = 10  # a budget this many times its time limit is noted
NO_TIMEOUT_LIMIT_S = 7 * 24 * 3600  # without a timeout: a trial longer than this is noted


@dataclass(frozen=True)
class Machine:
    cores: int
    memory_bytes: int  # available now


@dataclass(frozen=True)
class WorkerCost:
    """One worker's memory, by part (bytes)."""

    runtime: int
    weights: int
    batch: int
    batch_size: int
    tokens: int  # a row's tokens at most

    @property
    def total(self) -> int:
        return self.runtime + self.weights + self.batch


def this_machine() -> Machine:
    return Machine(cores=_cores(), memory_bytes=_available_memory())


def worker_cost(footprint: BaseFootprint | None, batch_size: int, tokens: int) -> WorkerCost:
    """What one worker needs (the module's docstring); the libraries only where the base's footprint
    is unknown (a runner that cannot say) or the model trains on a GPU."""
    if footprint is None or footprint.device != "cpu":
        return WorkerCost(RUNTIME_BYTES, 0, 0, batch_size, tokens)
    per_token = footprint.layers * footprint.hidden_size * ACTIVATION_BYTES
    per_token += footprint.vocab_size * LOGIT_BYTES
    return WorkerCost(RUNTIME_BYTES, footprint.bytes, batch_size * tokens * per_token, batch_size, tokens)


def largest_workers(machine: Machine, cost: WorkerCost) -> int:
    """The most workers that fit: a core each, and the memory of all of them (at least one: a single
    worker is this process, which runs anyway)."""
    return max(1, min(machine.cores, machine.memory_bytes // max(cost.total, 1)))


def fits(workers: int, machine: Machine, cost: WorkerCost) -> bool:
    return workers <= largest_workers(machine, cost)


def too_many_workers(workers: int, machine: Machine, cost: WorkerCost) -> str | None:
    """Why `workers` do not fit, in the error grammar's words; None when they do."""
    if fits(workers, machine, cost):
        return None
    largest = largest_workers(machine, cost)
    parts = f"the libraries {_gb(cost.runtime)}"
    if cost.weights:
        parts += f", the base's weights {_gb(cost.weights)}"
    if cost.batch:
        parts += f", a batch of {cost.batch_size} x {cost.tokens} tokens {_gb(cost.batch)}"
    return (
        f"--workers must fit this machine, but got workers={workers} with {machine.cores} cores and "
        f"{_gb(machine.memory_bytes)} of memory available: a worker needs a core and about "
        f"{_gb(cost.total)} ({parts}), so {largest} fit. Use --workers {largest}, or add --force to "
        f"start {workers} anyway."
    )


@dataclass(frozen=True)
class WorkerChoice:
    """What `--workers auto` chose: the processes, the threads each, and why, in words."""

    workers: int
    threads: int
    why: str

    def line(self) -> str:
        processes = "process" if self.workers == 1 else "processes"
        threads = "thread" if self.threads == 1 else "threads"
        return f"workers: auto -> {self.workers} {processes} x {self.threads} {threads} ({self.why})"


def choose_workers(
    machine: Machine, cost: WorkerCost, footprint: BaseFootprint | None, trials_left: int, gpus: int = 0
) -> WorkerChoice:
    """`--workers auto` (the module's docstring): the split of this machine into worker processes
    and threads that finishes a sweep soonest for the base's size, within its memory."""
    largest = largest_workers(machine, cost)
    left = max(1, trials_left)
    if footprint is not None and footprint.device == "cuda":
        workers = max(1, min(gpus, largest, left))
        return WorkerChoice(
            workers, machine.cores // workers or 1, f"{gpus} visible GPU(s): one worker per GPU"
        )
    where = f"{machine.cores} cores, {_gb(machine.memory_bytes)} free"
    if footprint is None or footprint.device != "cpu":
        return WorkerChoice(1, machine.cores, f"{where}; the base's size is unknown: one process")
    size = f"base {footprint.parameters / 1e6:.1f}M params"
    if footprint.parameters >= SMALL_BASE_PARAMS:
        rule = f"at {SMALL_BASE_PARAMS / 1e6:.0f}M params or more, one process with every thread"
        return WorkerChoice(1, machine.cores, f"{where}, {size}: {rule}")
    if left < POOL_MIN_TRIALS:
        rule = (
            f"{left} trial(s) left: fewer than {POOL_MIN_TRIALS}, "
            "one process starts soonest, see docs/parallel.md"
        )
        return WorkerChoice(1, machine.cores, f"{where}, {size}: {rule}")
    workers = min(machine.cores, largest, left)
    rule = "one process per core trains a long sweep of a small base soonest, see docs/parallel.md"
    if workers < machine.cores:
        capped = "memory" if largest < min(machine.cores, left) else "trials left"
        rule += f"; capped by the {capped} ({largest if capped == 'memory' else left})"
    return WorkerChoice(workers, max(1, machine.cores // workers), f"{where}, {size}: {rule}")


def budget_notes(max_steps: int | None, n_trials: int, timeout: float | None) -> list[str]:
    """What is absurd about a sweep's step budget for its time (the module's docstring)."""
    if not max_steps or max_steps <= 0:
        return []
    trial_s = max_steps / GUESSED_STEPS_PER_S
    at = f"at {GUESSED_STEPS_PER_S:g} steps a second, faster than lorasweep's bases train on a CPU"
    if timeout is not None and trial_s > FAR_BEYOND * timeout:
        return [
            f"a trial of train.max_steps={max_steps} takes at least {_duration(trial_s)} ({at}), far "
            f"beyond study.timeout={timeout:g} s: the timeout will stop every trial unscored. Lower "
            "max_steps, or raise the timeout."
        ]
    if timeout is None and trial_s > NO_TIMEOUT_LIMIT_S:
        return [
            f"a trial of train.max_steps={max_steps} takes at least {_duration(trial_s)} ({at}). "
            "Lower max_steps."
        ]
    if timeout is not None and n_trials * trial_s > FAR_BEYOND * timeout:
        return [
            f"{n_trials} trials of train.max_steps={max_steps} take at least "
            f"{_duration(n_trials * trial_s)} ({at}), far beyond study.timeout={timeout:g} s: the "
            "timeout, not n_trials, will end this sweep."
        ]
    return []


def _gb(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 / 10 else f"{size / 2**20:.1f} MiB"


def _duration(seconds: float) -> str:
    for unit, length in (("years", 365 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= length:
            return f"{seconds / length:.3g} {unit}"
    return f"{seconds:.3g} seconds"


def _cores() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _read("/sys/fs/cgroup/cpu.max").split()  # "max 100000" or "200000 100000" (cgroup v2)
    if len(quota) == 2 and quota[0] != "max":
        cores = min(cores, max(1, int(quota[0]) // int(quota[1])))
    return cores


def _available_memory() -> int:
    import psutil  # MemAvailable on Linux: free memory plus the caches the kernel can drop

    available = psutil.virtual_memory().available
    limit, used = _read("/sys/fs/cgroup/memory.max").strip(), _read("/sys/fs/cgroup/memory.current").strip()
    if limit.isdigit() and used.isdigit():
        available = min(available, int(limit) - int(used))
    return available


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
