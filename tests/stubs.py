"""The one stub trial runner of the study-side tests: a TrialRunner that never trains.

A trial is scripted by its LoRA rank: `script(r)` says which learning-curve points it reports,
what it returns and what it raises. That is enough to drive completions, pruning, failures and
interrupts through the real study, storage and MLflow record, in milliseconds a trial.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lorasweep.objectives import BaseFootprint, CurveHook, TrialResult, TrialRunner, TrialSpec, TrialTimedOut


@dataclass(frozen=True)
class Scripted:
    """What one trial does."""

    curve: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> points, in step order
    metrics: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, str]] = field(default_factory=list)
    error: BaseException | None = None  # raised before any curve point: the trial fails
    step_seconds: float = 0.0  # how long each curve point takes to "train"


class StubRunner(TrialRunner):
    """Keeps the trial side's contract (objectives/runner.py) without a model."""

    def __init__(
        self, script: Callable[[int], Scripted], base: dict[str, float] | None = None, train_rows: int = 100
    ) -> None:
        self.script, self.base, self.train_rows = script, base or {"eval_loss": 5.0}, train_rows
        self.footprint: BaseFootprint | None = None  # what the base weighs: unknown unless a test says
        self.calls: list[TrialSpec] = []  # every trial it was asked to run
        self.finished: list[int] = []  # the ranks of those that ran to the end (and would have generated)

    @property
    def seeds(self) -> list[int]:
        return [trial.seed for trial in self.calls]

    def evaluate_base(self) -> dict[str, float]:
        return dict(self.base)

    def run_trial(
        self,
        trial: TrialSpec,
        workdir: Path,
        on_curve: CurveHook | None = None,
        deadline: float | None = None,
    ) -> TrialResult:
        self.calls.append(trial)
        r = trial.lora_args["r"]
        scripted = self.script(r)
        if scripted.error is not None:
            raise scripted.error
        for step, points in sorted(scripted.curve.items()):
            time.sleep(scripted.step_seconds)
            if deadline is not None and time.monotonic() >= deadline:  # as the Recipe's _Deadline
                raise TrialTimedOut(f"the study's timeout passed at step {step}: the trial was stopped there")
            if on_curve is not None:
                on_curve(step, points)
        self.finished.append(r)
        return TrialResult(
            metrics=dict(scripted.metrics),
            adapter_dir=None,
            samples=list(scripted.samples),
            steps=max(scripted.curve, default=1),
        )
