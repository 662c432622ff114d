"""The contract between a study and the trial side: what a trial runner does, in what order, and
what it hands back. search/ drives trials through this and nothing else; `Recipe` (recipe.py) is
the real runner, and tests keep the same contract with stubs that never train.

The lifecycle of a runner, one per process:

    construct      load the data, then the base model, once (InputError for bad input, before
                   any trial starts)
    train_rows     the rows of the train split (the study checks its batch sizes against them)
    evaluate_base  the base model's metrics, no adapter: what every trial has to beat (once a study)
    run_trial      one trial: fresh adapter -> train -> evaluate -> save the adapter -> TrialResult;
                   any number of times, one at a time, each leaving the base as it found it;
                   with a `deadline` (a time.monotonic() reading), TrialTimedOut once it passes
    footprint      what the base model weighs (BaseFootprint), for the study's estimate of how
                   many workers fit the machine; None where the runner cannot say
    lr_range_test  optional (LrRangeTester): before a study's first trial, one short run with the
                   learning rate rising exponentially, as (lr, smoothed training loss) per step;
                   a runner without it (the tests' stubs) leaves the study's range as declared

While a trial trains, its curve hook receives (step, {metric: value}) at every Trainer log: the
training loss, gradient norm and learning rate, and at each evaluation the CURVE_METRICS. Whatever
the hook raises (optuna.TrialPruned, when the pruner says so) stops the trial at once and leaves
run_trial unchanged. Any exception run_trial raises fails that trial alone: the runner is ready for
the next one. Nothing here knows of Optuna, MLflow or the CLI.

A deadline stops training between two steps (and before generation): the trial did not fail, it
ran out of the study's time, so TrialTimedOut is a KeyboardInterrupt, as Ctrl-C is. Like Ctrl-C it
passes through every `except Exception` (the Trainer's, Optuna's catch), and the study records the
trial as interrupted, to run again on the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from .config import TrialSpec

# on_curve(step, metrics): learning-curve points while a trial trains (see the module's docstring).
CurveHook = Callable[[int, dict[str, float]], None]

# A metric of the user's own (the Python API's `metrics=`): fn(outputs, references) -> a number,
# scored on the same greedy generations as ROUGE and F1.
MetricFn = Callable[[list[str], list[str]], float]


@dataclass(frozen=True)
class TrialResult:
    metrics: dict[str, float]
    adapter_dir: Path | None
    samples: list[dict[str, str]] = field(default_factory=list)  # prompt, reference, output
    trainable_params: int = 0
    total_params: int = 0
    train_seconds: float = 0.0  # Trainer.train(), the evaluations during training included
    eval_seconds: float = 0.0  # those evaluations (the eval-loss curve the pruner reads)
    generate_seconds: float = 0.0  # generation and scoring for ROUGE/F1/exact match
    tokens: int = 0  # non-padding tokens trained on
    tokens_per_second: float = 0.0  # training throughput: tokens over train minus eval seconds
    steps: int = 0
    best_step: int | None = None  # with early stopping: the step whose adapter was kept
    peak_rss_mb: float = 0.0  # the process's peak resident memory while the trial ran
    peak_cuda_mb: float | None = None  # torch's peak CUDA allocation; None without a GPU
    # What pins the base the trial trained on (objectives.base_identity), taken when the process
    # loaded it; None: a runner that does not say
    base_identity: str | None = None


class TrialTimedOut(KeyboardInterrupt):
    """The trial's deadline passed while it trained (the study's timeout): see the module's docstring."""


@dataclass(frozen=True)
class BaseFootprint:
    """What one process's copy of the base model weighs, and the shape that sets what a training
    batch adds: the study estimates from it how many local workers fit (search/_machine.py)."""

    parameters: int
    bytes: int  # the weights as loaded (their dtype), buffers included
    hidden_size: int
    layers: int
    vocab_size: int
    device: str  # cpu | cuda | mps: where the weights and the activations live


class TrialRunner(Protocol):
    """What a study needs from the trial side (the lifecycle: the module's docstring)."""

    train_rows: int
    footprint: BaseFootprint | None

    def evaluate_base(self) -> dict[str, float]: ...

    def run_trial(
        self,
        trial: TrialSpec,
        workdir: Path,
        on_curve: CurveHook | None = None,
        deadline: float | None = None,
    ) -> TrialResult: ...


@dataclass(frozen=True)
class LrRangeSpec:
    """A learning-rate range test: `trial`'s settings (its batch size, rank, ...), the learning rate
    rising exponentially from `low` to `high` over `steps` optimiser steps."""

    trial: TrialSpec
    low: float
    high: float
    steps: int = 100


@runtime_checkable
class LrRangeTester(Protocol):
    """A runner that can run a learning-rate range test (objectives/_lr_range.py): (lr, smoothed
    training loss) per step, stopped early once the loss blows up. Kept apart from TrialRunner so
    runners without it still are TrialRunners."""

    def lr_range_test(self, spec: LrRangeSpec, workdir: Path) -> list[tuple[float, float]]: ...
