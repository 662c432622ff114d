"""Item (e) of benchmarks/bench.py: what a sweep costs beyond training, at 1,000 trials.

A real run_sweep (the default journal storage, MLflow on SQLite, the random sampler and a median
pruner, RunOptions(plots=False)) over a stub runner that trains nothing but talks to the study like
a demo trial: 10 training-loss logs and 5 evaluations through the curve hook (each one a curve point
for MLflow and, at evaluations, a report to Optuna and a pruning check), then final metrics, 20 sample
generations and a 100 kB adapter to log. What is left is lorasweep's, Optuna's and MLflow's own time.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from lorasweep.objectives import TrialResult, TrialSpec
from lorasweep.search import RunOptions, load_sweep, run_sweep

TRIALS = 1000
SWEEP = """\
study: {{name: scale, metric: f1, sampler: {{type: random, seed: 0}}, n_trials: {trials}}}
search_space:
  learning_rate: {{type: float, low: 1e-5, high: 3e-2, log: true}}
  lora_r: {{type: choice, values: [2, 4, 8, 16]}}
  lora_alpha: {{per_rank: {{type: choice, values: [1, 2]}}}}
  batch_size: {{type: choice, values: [8, 16, 32]}}
"""


class Stub:
    """A TrialRunner that trains nothing; it records when each trial reached it and left it."""

    train_rows = 1200
    footprint = None  # no model: nothing for the machine checks to weigh

    def __init__(self, folder: Path) -> None:
        self.adapter = folder / "adapter"
        self.adapter.mkdir()
        (self.adapter / "adapter_model.safetensors").write_bytes(os.urandom(100_000))
        (self.adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
        self.entered: list[float] = []
        self.left: list[float] = []
        self.rng = random.Random(0)

    def evaluate_base(self) -> dict[str, float]:
        return {"eval_loss": 11.0, "eval_perplexity": 6e4, "f1": 0.06}

    def run_trial(self, trial: TrialSpec, workdir: Path, on_curve=None, deadline=None) -> TrialResult:
        self.entered.append(time.perf_counter())
        try:
            quality = self.rng.random()
            for step in range(10, 101, 10):
                on_curve(step, {"loss": quality + 1 / step, "grad_norm": 1.0, "learning_rate": 1e-3})
                if step % 20 == 0:
                    on_curve(step, {"eval_loss": quality + 1 / step, "eval_perplexity": 1 + quality})
            metrics = {"eval_loss": quality, "eval_perplexity": 1 + quality, "rouge1": 1 - quality}
            metrics.update(rouge2=1 - quality, rougeL=1 - quality, exact_match=1 - quality, f1=1 - quality)
            samples = [{"prompt": f"prompt {i}", "reference": "ref", "output": "out"} for i in range(20)]
            return TrialResult(metrics=metrics, adapter_dir=self.adapter, samples=samples, steps=100)
        finally:
            self.left.append(time.perf_counter())


@dataclass(frozen=True)
class ScaleFigures:
    trials: int
    seconds: float  # the whole run_sweep
    per_trial: float  # seconds per trial, from the first trial's start to the last one's end
    first_100: float  # seconds per trial over the first and the last 100 trials
    last_100: float
    setup: float  # before the first trial: stores created, MLflow's database migrated, parent run
    teardown: float  # after the last trial's runner: its MLflow close, the summary, the parent run
    pruned: int
    tpe_ms: float  # TPE's own sampling of one trial on a study of this size, in milliseconds


def measure(trials: int = TRIALS) -> ScaleFigures:
    with tempfile.TemporaryDirectory(prefix="lorasweep-bench-scale-") as folder:
        here = os.getcwd()
        os.chdir(folder)  # the default stores: mlruns/optuna.journal and sqlite:///mlruns/mlflow.db
        try:
            Path("scale.yaml").write_text(SWEEP.format(trials=trials), encoding="utf-8")
            stub = Stub(Path(folder))
            started = time.perf_counter()
            study = run_sweep(load_sweep("scale.yaml"), RunOptions(quiet=True, plots=False), runner=stub)
            ended = time.perf_counter()
            states = [t.state for t in study.get_trials(deepcopy=False)]
            tpe_ms = _tpe_ms(study)
        finally:
            os.chdir(here)
    starts, window = stub.entered, min(100, trials // 2)
    return ScaleFigures(
        trials=trials,
        seconds=ended - started,
        per_trial=(stub.left[-1] - starts[0]) / trials,
        first_100=(starts[window] - starts[0]) / window,
        last_100=(stub.left[-1] - starts[-window]) / window,
        setup=starts[0] - started,
        teardown=ended - stub.left[-1],
        pruned=states.count(optuna.trial.TrialState.PRUNED),
        tpe_ms=tpe_ms,
    )


def _tpe_ms(study: optuna.Study, asks: int = 10) -> float:
    """TPE's time to sample one more trial from a study holding these trials (the stub study used the
    random sampler, whose own cost is nil): a copy in memory, asked `asks` times."""
    copy = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), direction="maximize")
    copy.add_trials(study.get_trials(deepcopy=False))
    distributions = study.trials[0].distributions
    started = time.perf_counter()
    for _ in range(asks):
        copy.tell(copy.ask(distributions), state=optuna.trial.TrialState.FAIL)
    return (time.perf_counter() - started) / asks * 1000
