"""`--workers auto`, the default: the split of the machine into worker processes and threads that
suits the base, within memory and the trials left; a number still overrides. Stub trial runners:
nothing trains."""

from __future__ import annotations

import pytest

from lorasweep.objectives import BaseFootprint
from lorasweep.search import RunOptions, load_sweep, run_sweep
from lorasweep.search._machine import POOL_MIN_TRIALS, SMALL_BASE_PARAMS, Machine, choose_workers, worker_cost
from lorasweep.search.cli import main
from lorasweep.search.errors import UserError

from .stubs import Scripted, StubRunner

GiB = 2**30
TINY = BaseFootprint(
    parameters=1_000_000, bytes=4 * 2**20, hidden_size=64, layers=2, vocab_size=2000, device="cpu"
)
SMOL = BaseFootprint(
    parameters=134_515_008, bytes=538_060_032, hidden_size=576, layers=30, vocab_size=49152, device="cpu"
)


def _choose(footprint, cores=2, memory=64 * GiB, trials_left=64, gpus=0):
    cost = worker_cost(footprint, 16, 64)
    return choose_workers(Machine(cores=cores, memory_bytes=memory), cost, footprint, trials_left, gpus)


def test_a_long_sweep_of_a_small_base_gets_one_one_thread_process_per_core():
    choice = _choose(TINY, cores=4)
    assert (choice.workers, choice.threads) == (4, 1)
    assert choice.line().startswith(
        "workers: auto -> 4 processes x 1 thread (4 cores, 64.0 GiB free, base 1.0M"
    )
    assert "one process per core trains a long sweep of a small base soonest" in choice.line()


def test_a_short_sweep_runs_in_one_process_whose_start_the_pool_would_not_repay():
    choice = _choose(TINY, cores=4, trials_left=POOL_MIN_TRIALS - 1)
    assert (choice.workers, choice.threads) == (1, 4)
    assert f"fewer than {POOL_MIN_TRIALS}, one process starts soonest" in choice.why


def test_a_large_base_gets_one_process_with_every_thread():
    assert SMOL.parameters >= SMALL_BASE_PARAMS
    choice = _choose(SMOL, cores=4)
    assert (choice.workers, choice.threads) == (1, 4)
    assert "1 process x 4 threads" in choice.line() and "one process with every thread" in choice.line()


def test_auto_starts_no_more_workers_than_fit_the_memory_nor_than_trials_are_left():
    per_worker = worker_cost(TINY, 16, 64).total
    by_memory = _choose(TINY, cores=8, memory=3 * per_worker)
    assert by_memory.workers == 3 and "capped by the memory (3)" in by_memory.why
    by_trials = _choose(TINY, cores=64, trials_left=POOL_MIN_TRIALS)
    assert (
        by_trials.workers == POOL_MIN_TRIALS
        and f"capped by the trials left ({POOL_MIN_TRIALS})" in by_trials.why
    )
    assert _choose(TINY, cores=8, memory=per_worker // 2).workers == 1  # this process runs anyway


def test_on_gpus_one_worker_per_visible_gpu():
    cuda = BaseFootprint(**{**TINY.__dict__, "device": "cuda"})
    assert _choose(cuda, cores=16, gpus=4).workers == 4
    assert _choose(cuda, cores=16, gpus=1).workers == 1
    assert _choose(cuda, cores=16, gpus=4, trials_left=3).workers == 3


def test_a_base_of_unknown_size_runs_in_one_process():
    assert _choose(None).workers == 1


def test_workers_must_be_a_positive_integer_or_auto(in_tmp, write, capsys):
    with pytest.raises(
        UserError, match=r"--workers must be a positive integer or auto, but got workers='many'"
    ):
        RunOptions(workers="many")
    assert RunOptions().workers == "auto"
    with pytest.raises(SystemExit) as exited:  # argparse's own exit for a bad flag
        main(["run", str(write("study: {name: w}\n")), "--workers", "many"])
    assert exited.value.code == 2
    assert "must be a positive integer or auto, but got 'many'" in capsys.readouterr().err


def test_auto_runs_a_handed_in_runner_in_this_process_and_says_nothing(stores, write, capsys):
    sweep = load_sweep(write("study: {name: here, metric: eval_loss, n_trials: 2, sampler: random}\n"))
    study = run_sweep(
        sweep, RunOptions(), runner=StubRunner(lambda n: Scripted(metrics={"eval_loss": 1.0 + n}))
    )
    assert len(study.trials) == 2
    assert "workers: auto" not in capsys.readouterr().out
