"""Bounded by the machine: `--workers N` against its cores and memory, the study's timeout that
stops a running trial, and `validate`'s note on a budget the time cannot hold. Stub trial runners:
nothing trains."""

from __future__ import annotations

import time

import optuna
import pytest
from mlflow import MlflowClient

from lorasweep.objectives import BaseFootprint, TrialTimedOut
from lorasweep.search import RunOptions, _workers, launch, load_sweep, record, run_sweep
from lorasweep.search._machine import (
    RUNTIME_BYTES,
    Machine,
    budget_notes,
    largest_workers,
    too_many_workers,
    worker_cost,
)
from lorasweep.search.cli import main
from lorasweep.search.errors import SweepStopped, UserError
from lorasweep.search.failures import require_a_complete_trial
from lorasweep.search.storage import open_storage

from . import stubs
from .stubs import Scripted, StubRunner

GiB = 2**30
# SmolLM2-135M's shape, fp32 on the CPU
SMOL = BaseFootprint(
    parameters=134_515_008, bytes=538_060_032, hidden_size=576, layers=30, vocab_size=49152, device="cpu"
)
SWEEP = """\
study: {{name: bound, metric: f1, sampler: {{type: grid, seed: 0}}, n_trials: 3{extra}}}
search_space:
  lora_r: {{type: choice, values: [2, 4, 8]}}
"""


def test_a_worker_costs_its_libraries_its_base_and_its_batch():
    cost = worker_cost(SMOL, batch_size=8, tokens=256)
    assert cost.runtime == RUNTIME_BYTES and cost.weights == SMOL.bytes
    assert cost.batch == 8 * 256 * (30 * 576 * 68 + 49152 * 12)
    assert worker_cost(SMOL, 16, 256).batch == 2 * cost.batch  # the batch grows with its size
    assert worker_cost(None, 8, 256).total == RUNTIME_BYTES  # a runner that cannot say
    on_gpu = BaseFootprint(**{**SMOL.__dict__, "device": "cuda"})
    assert worker_cost(on_gpu, 8, 256).total == RUNTIME_BYTES  # weights and batch in GPU memory


def test_the_largest_number_of_workers_is_bounded_by_cores_and_by_memory():
    cost = worker_cost(SMOL, 8, 256)
    assert largest_workers(Machine(cores=2, memory_bytes=64 * GiB), cost) == 2
    assert largest_workers(Machine(cores=64, memory_bytes=23 * GiB), cost) == 23 * GiB // cost.total
    assert largest_workers(Machine(cores=64, memory_bytes=GiB), cost) == 1  # this process runs anyway
    assert too_many_workers(2, Machine(cores=2, memory_bytes=64 * GiB), cost) is None


def test_too_many_workers_says_the_numbers_and_the_most_that_fit():
    said = too_many_workers(64, Machine(cores=2, memory_bytes=23 * GiB), worker_cost(SMOL, 16, 256))
    assert said == (
        "--workers must fit this machine, but got workers=64 with 2 cores and 23.0 GiB of memory "
        "available: a worker needs a core and about 8.0 GiB (the libraries 0.8 GiB, the base's "
        "weights 0.5 GiB, a batch of 16 x 256 tokens 6.7 GiB), so 2 fit. Use --workers 2, or add "
        "--force to start 64 anyway."
    )


def test_run_refuses_too_many_workers_before_anything_is_written(stores, write, monkeypatch):
    monkeypatch.setattr(launch, "this_machine", lambda: Machine(cores=2, memory_bytes=23 * GiB))
    runner = StubRunner(lambda r: Scripted(metrics={"f1": r / 10}))
    runner.footprint = SMOL
    sweep = load_sweep(write(SWEEP.format(extra="")))
    with pytest.raises(UserError, match=r"but got workers=64 with 2 cores .* so 2 fit\. Use --workers 2"):
        run_sweep(sweep, RunOptions(workers=64, quiet=True), runner=runner)
    assert not (stores / "mlruns" / "optuna.journal").exists()
    client = MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db")
    assert [e.name for e in client.search_experiments()] == ["Default"]


class _StepClock:
    """time, whose monotonic clock moves only when a stub trial sleeps through a step (and then
    without sleeping): the timeout tests count steps, so a loaded machine's slow MLflow writes cannot
    push a trial past the deadline, and they run in milliseconds."""

    def __init__(self, moves: bool) -> None:
        self.now = [1000.0]
        self.moves = moves

    def monotonic(self) -> float:
        return self.now[0]

    def sleep(self, seconds: float) -> None:
        if self.moves:
            self.now[0] += seconds
        else:  # a poll of the workers' loop: real time, the clock stays
            time.sleep(seconds)

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def step_clock(monkeypatch):
    steps = _StepClock(moves=True)
    polls = _StepClock(moves=False)
    polls.now = steps.now  # one clock, read by the deadline's every check
    monkeypatch.setattr(stubs, "time", steps)
    monkeypatch.setattr(launch, "time", polls)
    monkeypatch.setattr(_workers, "time", polls)
    return steps


def _slow_runner() -> StubRunner:
    """Each trial: three curve points 0.3 s apart (on the step clock, when a test takes it)."""
    return StubRunner(
        lambda r: Scripted(
            curve={step: {"eval_loss": 1 / r, "loss": 1 / r} for step in (10, 20, 30)},
            metrics={"eval_loss": 1 / r, "f1": r / 10},
            step_seconds=0.3,
        ),
        base={"eval_loss": 5.0, "f1": 0.0},
    )


def test_the_timeout_stops_the_running_trial_says_so_and_a_rerun_runs_it_again(
    stores, write, capsys, step_clock
):
    sweep = load_sweep(write(SWEEP.format(extra=", timeout: 1.5")))
    study = run_sweep(sweep, RunOptions(plots=False), runner=_slow_runner())

    first, stopped = study.trials
    assert first.state.name == "COMPLETE"
    assert stopped.state.name == "FAIL" and stopped.user_attrs["interrupted"]
    assert stopped.user_attrs["error"].startswith("TrialTimedOut: the study's timeout passed at step")
    client = MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db")
    run = client.get_run(stopped.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["lorasweep.state"] == "FAIL"
    assert client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "FINISHED"
    said = [line for line in capsys.readouterr().out.splitlines() if "timeout" in line]
    assert said == [
        "the study's timeout (1.5 s) ended the sweep at 1/3 finished trials; trial 1 was stopped at the "
        "deadline and runs again on the next run"
    ]

    untimed = load_sweep(write(SWEEP.format(extra="")))
    study = run_sweep(untimed, RunOptions(quiet=True, plots=False), runner=_slow_runner())
    retry = study.trials[2]
    assert retry.user_attrs["retry_of"] == 1 and retry.params == stopped.params
    assert retry.state.name == "COMPLETE"
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3


def test_a_timeout_before_any_trial_completes_says_what_stopped_them(stores, write, step_clock):
    sweep = load_sweep(write(SWEEP.format(extra=", timeout: 0.5")))
    run_sweep(sweep, RunOptions(quiet=True, plots=False), runner=_slow_runner())
    with pytest.raises(SweepStopped) as raised:
        require_a_complete_trial(optuna.load_study(study_name="bound", storage=open_storage(None)))
    assert str(raised.value).startswith(
        "no trial finished: the study's timeout stopped trial 0 before it completed. Raise study.timeout "
        "or lower train.max_steps"
    )


def test_budget_notes_name_a_step_budget_the_time_cannot_hold():
    assert budget_notes(120, 8, None) == [] and budget_notes(120, 8, 600) == []
    (long,) = budget_notes(10**9, 3, 30)
    assert long.startswith("a trial of train.max_steps=1000000000 takes at least 116 days (at 100 steps")
    assert long.endswith(
        "far beyond study.timeout=30 s: the timeout will stop every trial unscored. Lower max_steps, "
        "or raise the timeout."
    )
    (many,) = budget_notes(120, 10**6, 30)
    assert many.startswith("1000000 trials of train.max_steps=120 take at least 13.9 days")
    assert many.endswith("the timeout, not n_trials, will end this sweep.")
    assert budget_notes(10**9, 1, None)[0].endswith("Lower max_steps.")


def test_validate_notes_an_absurd_budget(write, capsys):
    path = write("study: {name: b, metric: f1, timeout: 30}\ntrain: {max_steps: 1000000000}\n")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("note: a trial of train.max_steps=1000000000 takes at least 116 days")


def test_a_retry_the_timeout_stops_again_is_said_to_be_the_last(stores, write, capsys, step_clock):
    """study.retries (1) is spent by the retry: the second run must not promise a third attempt."""
    sweep = load_sweep(write(SWEEP.format(extra=", timeout: 0.5")))
    for _ in range(2):
        run_sweep(sweep, RunOptions(plots=False), runner=_slow_runner())
    said = [line for line in capsys.readouterr().out.splitlines() if "timeout" in line]
    assert said == [
        "the study's timeout (0.5 s) ended the sweep at 0/3 finished trials; trial 0 was stopped at the "
        "deadline and runs again on the next run",
        "the study's timeout (0.5 s) ended the sweep at 0/3 finished trials; trial 1 was stopped at the "
        "deadline and is not run again (study.retries: 1)",
    ]
    study = optuna.load_study(study_name="bound", storage=open_storage(None))
    assert study.trials[1].user_attrs["retry_of"] == 0


def test_the_timeout_names_only_a_trial_this_run_stopped(write):
    """This run's timeout fell between trials: an earlier run's stopped trial is not named as its."""
    sweep = load_sweep(write(SWEEP.format(extra=", timeout: 1.5")))
    study = optuna.create_study()
    earlier = study.ask()
    record.failed(
        earlier, TrialTimedOut("the study's timeout passed at step 10: the trial was stopped there")
    )
    study.tell(earlier, state=optuna.trial.TrialState.FAIL)
    study.tell(study.ask(), 1.0)  # this run's one trial, finished before its deadline
    said: list[str] = []
    launch._say_if_timed_out(study, sweep, 3, "timeout", said.append, first=1)
    assert said == ["the study's timeout (1.5 s) ended the sweep at 1/3 finished trials"]
    said.clear()
    launch._say_if_timed_out(study, sweep, 3, "timeout", said.append, first=0)
    assert said[0].endswith("; trial 0 was stopped at the deadline and runs again on the next run")


def test_a_pool_counts_the_base_this_process_lets_go_of_as_free():
    # run loads the base to check it, then drops it before the workers start: two workers whose
    # memory is there once that copy is gone must fit.
    cost = worker_cost(SMOL, 8, 256)
    tight = Machine(cores=2, memory_bytes=2 * cost.total - SMOL.bytes)
    assert largest_workers(tight, cost) == 1
    assert largest_workers(launch._as_pool_finds_it(tight, SMOL), cost) == 2
    on_gpu = BaseFootprint(**{**SMOL.__dict__, "device": "cuda"})
    assert launch._as_pool_finds_it(tight, on_gpu) == tight  # its weights were never in this memory
