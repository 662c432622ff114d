"""Item (c) of benchmarks/bench.py: search efficiency on the demo task, as a tabular (replay) benchmark.

benchmarks/demo_grid.json holds every configuration of the demo's search space on a grid (the learning
rate cut into 8 log-spaced cells), each trained once for real by benchmarks/record_grid.py. Here every
search method runs SEEDS seeded studies against a replay objective: a trial samples through lorasweep's
own search space and sampler (search.strategy.make_sampler) and the demo's pruner, its learning rate falls
into a cell, and the recorded curve of that configuration is reported evaluation by evaluation through
Optuna's trial.report / should_prune, as lorasweep's reporter does. A pruned trial has cost the steps up
to its pruning, a complete one all of them, and returns the recorded final eval perplexity. Compute is
counted in training steps, so these figures do not depend on the machine or its load.

Studies live in Optuna's in-memory storage: the samplers and pruners decide the same on any storage,
and the storage's own cost is item (e)'s business.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution

from lorasweep.search import Sweep, load_sweep
from lorasweep.search.strategy import build_pruner, make_sampler

GRID = Path(__file__).with_name("demo_grid.json")
SEEDS = 20
BUDGET = 2400  # training steps: 24 trials of 100 steps, three times the demo's 8-trial sweep
RUN_TO = 2 * BUDGET  # every study runs on to here, so slower methods' compute to the target shows
CHECKPOINTS = (400, 800, 1600, 2400)
# name: (sampler, prune with the demo's pruner)
METHODS = {
    "TPE + median pruning": ("tpe", True),
    "random": ("random", False),
    "grid": ("grid", False),
    "random + median pruning": ("random", True),
    "TPE, no pruning": ("tpe", False),
}


@dataclass(frozen=True)
class Table:
    sweep: Sweep  # the demo's sweep file, as recorded
    edges: list[float]  # upper edges of the learning-rate cells
    centres: list[float]
    entries: dict[tuple, dict]  # (cell, r, k, batch) -> recorded entry
    recorded: dict

    def lookup(self, sampled: dict) -> dict:
        cell = min(bisect.bisect_left(self.edges, sampled["learning_rate"]), len(self.edges) - 1)
        return self.entries[(cell, sampled["lora_r"], sampled["lora_alpha_per_rank"], sampled["batch_size"])]

    @property
    def best(self) -> float:
        return min(e["metrics"]["eval_perplexity"] for e in self.entries.values() if "metrics" in e)


def load_table(path: Path | None = None) -> Table:
    raw = json.loads((path or GRID).read_text(encoding="utf-8"))
    sweep = load_sweep(Path(__file__).parent.parent / "spaces" / "demo.yaml", text=raw["sweep"])
    entries = {}
    for e in raw["entries"]:
        e["curve"] = {int(step): value for step, value in e["curve"].items()}
        entries[(e["lr_cell"], e["lora_r"], e["lora_alpha_per_rank"], e["batch_size"])] = e
    cells = raw["lr_cells"]
    return Table(sweep, [c[2] for c in cells], [c[1] for c in cells], entries, raw["recorded"])


class Replay:
    """The objective: one recorded trial per call, and the compute spent so far."""

    def __init__(self, table: Table, sweep: Sweep) -> None:
        self.table, self.space = table, sweep.space
        self.spent = 0
        self.log: list[tuple[int, float | None]] = []  # (steps spent after the trial, its value)

    def __call__(self, trial: optuna.Trial) -> float:
        entry = self.table.lookup(self.space.sample(trial))
        done = 0
        for step, value in sorted(entry["curve"].items()):
            self.spent += step - done
            done = step
            trial.report(value, step)
            if trial.should_prune():
                self.log.append((self.spent, None))
                raise optuna.TrialPruned()
        self.spent += entry["steps"] - done
        if "failed" in entry:
            self.log.append((self.spent, None))
            raise FloatingPointError(entry["failed"])
        value = entry["metrics"]["eval_perplexity"]
        self.log.append((self.spent, value))
        return value


def method_sweep(table: Table, sampler: str, prune: bool, seed: int) -> Sweep:
    """The demo's sweep with this method's sampler, seed and pruner, minimising eval perplexity. The
    grid searches the learning-rate cells' centres (a grid needs a finite space)."""
    demo = table.sweep
    study = dataclasses.replace(
        demo.study,
        metrics=("eval_perplexity",),
        directions=("minimize",),
        sampler=sampler,
        seed=seed,
        pruner=demo.study.pruner if prune else None,
    )
    space = demo.space
    if sampler == "grid":
        grid = {**space.distributions, "learning_rate": CategoricalDistribution(table.centres)}
        space = dataclasses.replace(space, distributions=grid)
    return dataclasses.replace(demo, study=study, space=space)


def run_study(table: Table, sampler: str, prune: bool, seed: int) -> list[tuple[int, float | None]]:
    sweep = method_sweep(table, sampler, prune, seed)
    replay = Replay(table, sweep)

    def stop_at_budget(study: optuna.Study, trial) -> None:
        if replay.spent >= RUN_TO:
            study.stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the grid sampler's "all grids evaluated" and the like
        study = optuna.create_study(
            sampler=make_sampler(sweep), pruner=build_pruner(sweep.study.pruner), direction="minimize"
        )
        study.optimize(replay, callbacks=[stop_at_budget], catch=(FloatingPointError,))
    return replay.log


def best_at(log: list[tuple[int, float | None]], compute: int) -> float:
    """The best value of the trials complete once `compute` steps were spent (inf if none)."""
    return min((v for spent, v in log if spent <= compute and v is not None), default=float("inf"))


def steps_to_reach(log: list[tuple[int, float | None]], target: float) -> float:
    """Steps spent when the best value first reached `target` (inf if it never did)."""
    return next((spent for spent, v in log if v is not None and v <= target), float("inf"))


@dataclass(frozen=True)
class MethodFigures:
    name: str
    best: dict[int, float]  # checkpoint -> median over seeds of the best eval perplexity
    steps_to_target: float  # median over seeds
    reached: int  # seeds that reached the target within RUN_TO
    trials: float  # median trials within BUDGET
    pruned_share: float  # of the trials within BUDGET, over all seeds


@dataclass(frozen=True)
class SearchFigures:
    methods: list[MethodFigures]
    target: float  # random search's final best at BUDGET, median over seeds
    grid_best: float  # the best configuration in the table
    configurations: int
    seeds: int


def measure(seeds: int = SEEDS, table: Table | None = None) -> SearchFigures:
    table = table or load_table()
    logs = {
        name: [run_study(table, sampler, prune, seed) for seed in range(seeds)]
        for name, (sampler, prune) in METHODS.items()
    }
    target = statistics.median(best_at(log, BUDGET) for log in logs["random"])
    methods = []
    for name, runs in logs.items():
        within = [[v for spent, v in log if spent <= BUDGET] for log in runs]
        methods.append(
            MethodFigures(
                name=name,
                best={c: statistics.median(best_at(log, c) for log in runs) for c in CHECKPOINTS},
                steps_to_target=statistics.median(steps_to_reach(log, target) for log in runs),
                reached=sum(steps_to_reach(log, target) <= RUN_TO for log in runs),
                trials=statistics.median(len(w) for w in within),
                pruned_share=sum(v is None for w in within for v in w) / max(1, sum(len(w) for w in within)),
            )
        )
    return SearchFigures(methods, target, table.best, len(table.entries), seeds)
