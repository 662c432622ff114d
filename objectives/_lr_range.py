"""The learning-rate range test (Leslie Smith's, as fastai's lr_find runs it): one short training run
whose learning rate rises exponentially from `low` to `high`, one step at a time, recording the
smoothed training loss at each step, and stopping once the loss blows up. The study side reads the
curve and narrows the range its sampler draws the learning rate from (search/_lr_range.py).

The Trainer runs it as any trial trains (the same model, data, collator and settings), with two
changes: the schedule is a LambdaLR the Trainer steps as its own, and a callback reads the loss of
every step; no evaluation, no checkpoint, no generation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from transformers import Trainer, TrainerCallback

from .runner import LrRangeSpec

# The loss is smoothed as fastai does (an exponential moving average, debiased), with a shorter
# memory than fastai's 0.98: a test here is 60-100 steps, and a window of ~50 steps would lag the
# curve by half the test, putting its minimum well past where the loss really turned.
SMOOTHING = 0.9
# Stop once the smoothed loss passes this multiple of its minimum (fastai's stop_div: 4x): the
# rates beyond blow up, and training on would only spend steps.
DIVERGED = 4.0

_T = TypeVar("_T", bound=Trainer)


class TrainerFactory(Protocol):
    """Builds a Trainer of class `cls` as a trial's is built, with these settings and callbacks."""

    def __call__(self, cls: type[_T], overrides: dict[str, Any], callbacks: list[TrainerCallback]) -> _T: ...


def lr_at(spec: LrRangeSpec, step: int) -> float:
    """The learning rate of optimiser step `step` (0-based): exponential from low to high."""
    return spec.low * (spec.high / spec.low) ** (step / max(spec.steps - 1, 1))


class _RangeScheduleTrainer(Trainer):
    """A Trainer whose scheduler is the range test's exponential ramp (the optimiser starts at `low`)."""

    range_spec: LrRangeSpec

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None:
            spec = self.range_spec
            optimizer = optimizer or self.optimizer
            if optimizer is None:  # the Trainer creates the optimiser before the scheduler
                raise RuntimeError("the range test's scheduler needs the Trainer's optimiser")
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: lr_at(spec, step) / spec.low
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler


class _RangeRecorder(TrainerCallback):
    """The smoothed loss of each step, stopping the run once it diverges (or is not finite)."""

    def __init__(self, spec: LrRangeSpec) -> None:
        self.spec = spec
        self.points: list[tuple[float, float]] = []
        self._average, self._best = 0.0, math.inf

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        step = state.global_step - 1  # the step just taken, at lr_at(step)
        if not math.isfinite(loss):
            control.should_training_stop = True
            return
        self._average = SMOOTHING * self._average + (1 - SMOOTHING) * loss
        smoothed = self._average / (1 - SMOOTHING ** (len(self.points) + 1))
        self.points.append((lr_at(self.spec, step), smoothed))
        self._best = min(self._best, smoothed)
        if smoothed > DIVERGED * self._best:
            control.should_training_stop = True


def run_range_test(
    make_trainer: TrainerFactory, spec: LrRangeSpec, workdir: Path
) -> list[tuple[float, float]]:
    """Train `spec.steps` steps (fewer if the loss blows up) with the ramp; (lr, smoothed loss) per
    step. `make_trainer(trainer_class, settings, callbacks)` builds the Trainer as a trial's is built."""
    recorder = _RangeRecorder(spec)
    settings = {
        "max_steps": spec.steps,
        "learning_rate": spec.low,
        "warmup_steps": 0,
        "logging_steps": 1,  # the loss of every step: the test's curve
        "eval_strategy": "no",
        "save_strategy": "no",
    }
    trainer = make_trainer(_RangeScheduleTrainer, settings, [recorder])
    trainer.range_spec = spec
    trainer.train()
    return recorder.points
