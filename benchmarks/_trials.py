"""Items (a), (b) and (d) of benchmarks/bench.py: lorasweep's trials beside the same trials without it.

One real sweep (journal storage, MLflow on SQLite, TPE, no pruner: every trial does the same work as
its twin) runs REPS + 1 trials of the demo's settings. Its runner wraps objectives.Recipe, and for
each trial also runs, in the same process and alternately before and after it:
  B  the same trial as a plain Trainer script (benchmarks/_bare.py), same parameters and seed;
  C  the bare PyTorch + peft loop over the batches B's Trainer drew.
A trial's time through lorasweep is everything between the end of the previous trial's training and
the end of its own, minus the bare runs in between: the tell and MLflow close of the previous trial,
the ask and sampling, the MLflow run's start, the Recipe's trial (callbacks, metrics, generation,
saving, gc). The first trial (it also carries the sweep's start) and its twins are a warm-up.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModelForCausalLM

from _bare import BareResult, LoopResult, bare_loop, bare_trial
from lorasweep.objectives import BaseFootprint, Recipe, TrialResult, TrialSpec
from lorasweep.objectives.model import resolve_base
from lorasweep.search import RunOptions, load_sweep, run_sweep

REPS = 5  # measured trials per side, after the warm-up
# The demo's sweep file (spaces/demo.yaml) with a narrower space (every trial learns, none diverges)
# and no pruner, so that lorasweep's trial and its bare twin do the same work.
SWEEP = """\
study: {{name: overhead, metric: f1, sampler: {{type: tpe, seed: 0}}, n_trials: {trials}}}
data: {{max_length: 64}}
train:
  max_steps: 100
  eval_steps: 20
  logging_steps: 10
  per_device_eval_batch_size: 64
  warmup_steps: 5
  per_device_train_batch_size: 16
eval: {{max_samples: 96, max_new_tokens: 10}}
search_space:
  learning_rate: {{type: float, low: 3e-3, high: 1e-2, log: true}}
  lora_r: {{type: choice, values: [4, 8]}}
  lora_alpha: {{per_rank: {{type: choice, values: [1, 2]}}}}
"""


@dataclass
class Pair:
    spec: TrialSpec
    lorasweep_seconds: float = 0.0
    result: TrialResult | None = None
    last_eval_loss: float = float("nan")  # lorasweep's, as reported at the last evaluation
    bare: BareResult | None = None
    loop: LoopResult | None = None


@dataclass
class Paired:
    """A TrialRunner: lorasweep's Recipe, with the bare twins of each trial run beside it."""

    worker: Recipe
    base: object  # the bare side's own copy of the base model
    target_modules: str
    pairs: list[Pair] = field(default_factory=list)
    _last_exit: float = 0.0

    @property
    def train_rows(self) -> int:
        return self.worker.train_rows

    @property
    def footprint(self) -> BaseFootprint | None:
        return self.worker.footprint

    def evaluate_base(self) -> dict[str, float]:
        return self.worker.evaluate_base()

    def run_trial(self, spec: TrialSpec, workdir: Path, on_curve=None, deadline=None) -> TrialResult:
        entered = time.perf_counter()
        pair = Pair(spec)
        self.pairs.append(pair)
        bare_first = len(self.pairs) % 2 == 1  # B, C, A then A, B, C: neither side always goes first
        if bare_first:
            self._bare(pair)

        def hook(step: int, metrics: dict[str, float]) -> None:
            if "eval_loss" in metrics:
                pair.last_eval_loss = metrics["eval_loss"]
            if on_curve is not None:
                on_curve(step, metrics)

        started = time.perf_counter()
        pair.result = self.worker.run_trial(spec, workdir, hook, deadline)
        ended = time.perf_counter()
        pair.lorasweep_seconds = (entered - self._last_exit) + (ended - started)
        if not bare_first:
            self._bare(pair)
        self._last_exit = time.perf_counter()
        return pair.result

    def _bare(self, pair: Pair) -> None:
        eval_spec = self.worker.eval_spec
        with tempfile.TemporaryDirectory(prefix="lorasweep-bench-bare-") as folder:
            pair.bare, batches = bare_trial(
                self.base,
                self.worker.tokenizer,
                self.worker.data,
                pair.spec,
                self.target_modules,
                eval_spec.max_samples,
                eval_spec.max_new_tokens,
                Path(folder),
            )
        pair.loop = bare_loop(self.base, batches, pair.spec, self.target_modules)


@dataclass(frozen=True)
class TrialFigures:
    pairs: list[Pair]  # the measured ones, warm-up dropped
    ratios: list[float]  # lorasweep / bare Trainer script, trial by trial
    trial_seconds: float  # medians over the measured trials
    bare_seconds: float
    own_seconds: float  # lorasweep's trial minus its bare twin
    same_work: bool  # the same eval loss at the last evaluation, the same tokens, on every side
    trial_tps: float  # training throughput, tokens/s, evaluations excluded
    bare_trainer_tps: float
    loop_tps: float
    padding_share: float  # of the batches' tokens, with dynamic padding (the collator's)
    fixed_padding_share: float  # the same, had every row been padded to data.max_length
    max_length: int
    generate_share: float  # of a complete trial's time: generation and scoring
    generate_seconds: float
    seconds_per_step: float  # the rest of a trial, per training step (its evaluations included)
    steps: int
    max_samples: int  # (d): the last trial generating for eval.max_samples prompts, and for all
    eval_prompts: int
    capped_seconds: float
    all_prompts_seconds: float
    setup_seconds: float  # the Recipe's: the base model loaded and the data tokenized, once per worker

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def measure(reps: int = REPS, log=print) -> TrialFigures:
    with tempfile.TemporaryDirectory(prefix="lorasweep-bench-trials-") as folder:
        path = Path(folder) / "overhead.yaml"
        path.write_text(SWEEP.format(trials=reps + 1), encoding="utf-8")
        sweep = load_sweep(path)
        resolve_base(sweep.model)  # checks the shipped tiny base (once per process) before timing
        setting_up = time.perf_counter()
        worker = Recipe(sweep.model, sweep.data, sweep.eval)
        setup_seconds = time.perf_counter() - setting_up
        base = AutoModelForCausalLM.from_pretrained(resolve_base(sweep.model))
        base.config.use_cache = False  # as lorasweep trains (and as a careful script would)
        paired = Paired(worker, base, sweep.model.target_modules)
        options = RunOptions(
            quiet=True,
            plots=False,
            storage=f"journal:///{folder}/optuna.journal",
            tracking_uri=f"sqlite:///{folder}/mlflow.db",
        )
        run_sweep(sweep, options, log=log, runner=paired)
        pairs = paired.pairs[1:]

        # (d): the last trial again, generating for every eval prompt instead of eval.max_samples.
        last = pairs[-1]
        capped = worker.eval_spec
        worker.eval_spec = capped.model_copy(update={"max_samples": len(worker.data.eval_prompts)})
        try:
            everything = worker.run_trial(last.spec, Path(folder) / "all-prompts")
        finally:
            worker.eval_spec = capped

    def median(values) -> float:
        return statistics.median(list(values))

    steps = last.result.steps
    return TrialFigures(
        pairs=pairs,
        ratios=[p.lorasweep_seconds / p.bare.seconds for p in pairs],
        trial_seconds=median(p.lorasweep_seconds for p in pairs),
        bare_seconds=median(p.bare.seconds for p in pairs),
        own_seconds=median(p.lorasweep_seconds - p.bare.seconds for p in pairs),
        same_work=all(
            abs(p.last_eval_loss - p.bare.last_eval_loss) < 1e-6 and p.result.tokens == p.loop.tokens
            for p in pairs
        ),
        trial_tps=median(p.result.tokens_per_second for p in pairs),
        bare_trainer_tps=median(p.loop.tokens / (p.bare.train_seconds - p.bare.eval_seconds) for p in pairs),
        loop_tps=median(p.loop.tokens / p.loop.seconds for p in pairs),
        padding_share=1 - last.loop.tokens / last.loop.padded,
        fixed_padding_share=1 - last.loop.tokens / (last.loop.rows * sweep.data.max_length),
        max_length=sweep.data.max_length,
        generate_share=median(p.result.generate_seconds / p.lorasweep_seconds for p in pairs),
        generate_seconds=median(p.result.generate_seconds for p in pairs),
        seconds_per_step=median((p.lorasweep_seconds - p.result.generate_seconds) / steps for p in pairs),
        steps=steps,
        max_samples=capped.max_samples,
        eval_prompts=len(worker.data.eval_prompts),
        capped_seconds=last.result.generate_seconds,
        all_prompts_seconds=everything.generate_seconds,
        setup_seconds=setup_seconds,
    )
