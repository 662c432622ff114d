"""Item (c) of benchmarks/bench.py: search efficiency, replayed on two recorded tasks.

Each table holds every configuration of a sweep's search space on a grid (the learning rate cut into
8 log-spaced cells), each trained once for real by benchmarks/record_grid.py:

- demo_grid.json: spaces/demo.yaml, the tone label task (100 steps, an evaluation every 20);
- phrase_grid.json: spaces/phrase.yaml, free-text generation on the same rows (60 steps, every 10).

Every search method runs SEEDS seeded studies against a replay objective: a trial samples through
lorasweep's own search space and sampler (search.strategy.make_sampler), its learning rate falls into
a cell, and the recorded curve of that configuration is reported evaluation by evaluation through
Optuna's trial.report / should_prune, as lorasweep's reporter does. A pruned trial has cost the steps
up to its pruning, a complete one all of them, and returns the recorded final eval perplexity.
Compute is counted in training steps, so these figures do not depend on the machine or its load.

The "recommended" method is what the task's own sweep file says (its sampler, seed aside, and its
pruner): the setup lorasweep recommends. The others are built for each table from its evaluation
steps; three of them are peer tools as they come out of the box (PEERS: transformers'
hyperparameter_search, W&B Sweeps, Ray Tune), each replayed with Optuna's sampler nearest to its own
and its own stopping rule, one evaluation report counting as one of the tool's iterations. Studies
live in Optuna's in-memory storage: the samplers and pruners decide the same on any storage, and the
storage's own cost is item (e)'s business.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution

from lorasweep.search import Sweep, load_sweep
from lorasweep.search.strategy import build_pruner, make_sampler

ROOT = Path(__file__).resolve().parent.parent
GRIDS = {
    "demo": Path(__file__).with_name("demo_grid.json"),
    "phrase": Path(__file__).with_name("phrase_grid.json"),
}
SEEDS = 20
BUDGET_TRIALS = 24  # random search's budget: 24 full trials
CHECKPOINTS = (1 / 6, 1 / 3, 2 / 3, 1)  # of the budget: where the best-so-far is shown
RECOMMENDED = "recommended (the sweep file's own)"
ORACLE = "random + an oracle pruner (the floor of pruning)"
TRANSFORMERS = "transformers hyperparameter_search defaults (TPE + MedianPruner)"
WANDB = "W&B Sweeps bayes + hyperband defaults (approximated: TPE + W&B's band rule)"
RAY = "Ray Tune defaults (random + ASHAScheduler, x4)"
PEERS = (TRANSFORMERS, WANDB, RAY)  # the peers' out-of-the-box setups: bench.py compares against the best


@dataclass(frozen=True)
class Table:
    name: str
    sweep: Sweep  # the task's sweep file as it is now (what is recommended); trains as recorded
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

    @property
    def steps(self) -> int:  # a full trial
        return max(e["steps"] for e in self.entries.values())

    @property
    def first_evaluation(self) -> int:
        return min(min(e["curve"]) for e in self.entries.values() if e["curve"])

    @property
    def budget(self) -> int:
        return BUDGET_TRIALS * self.steps

    @property
    def run_to(self) -> int:  # every study runs on to here, so slower methods' compute to the target shows
        return 2 * self.budget

    @property
    def checkpoints(self) -> list[int]:
        return [round(self.budget * c) for c in CHECKPOINTS]


def load_table(name: str = "demo") -> Table:
    raw = json.loads(GRIDS[name].read_text(encoding="utf-8"))
    sweep = load_sweep(ROOT / raw.get("sweep_file", "spaces/demo.yaml"))
    entries = {}
    for e in raw["entries"]:
        e["curve"] = {int(step): value for step, value in e["curve"].items()}
        entries[(e["lr_cell"], e["lora_r"], e["lora_alpha_per_rank"], e["batch_size"])] = e
    cells = raw["lr_cells"]
    return Table(name, sweep, [c[2] for c in cells], [c[1] for c in cells], entries, raw["recorded"])


def recorded_sweep(name: str) -> Sweep:
    """The sweep file as it was when its table was recorded: tests check it trains as today's."""
    raw = json.loads(GRIDS[name].read_text(encoding="utf-8"))
    return load_sweep(ROOT / raw.get("sweep_file", "spaces/demo.yaml"), text=raw["sweep"])


class OraclePruner(optuna.pruners.BasePruner):
    """Not a method: the floor of pruning. It knows every configuration's final value and stops, at
    its first evaluation, each trial that will not reach the target; no pruner can spend less on the
    trials a sampler proposes."""

    def __init__(self, table: Table, target: float) -> None:
        self.table, self.target = table, target

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        final = self.table.lookup(trial.params).get("metrics", {}).get("eval_perplexity", float("inf"))
        return final > self.target


class WandbHyperband(optuna.pruners.BasePruner):
    """W&B Sweeps' `early_terminate: {type: hyperband, min_iter: ...}` at its defaults (eta 3, strict),
    as wandb/sweeps' hyperband_stopping.py (hyperband_stop_runs) decides: its bands are min_iter x
    eta^k logged values of the metric (here: evaluations); a run that has logged b values, b its
    latest band, stops if its b-th value is above sorted(every run's b-th value, its own and stopped
    runs' included)[int(n / eta)], keeping about the best third. min_iter has no default (W&B requires
    it or max_iter): 1, the first evaluation, as every pruner of this table starts there.

    The rule is W&B's; the sweep around it is approximated: W&B's controller polls running runs, so a
    real run overshoots its band by however long the poll takes (here it stops at once: cheaper for
    W&B); and W&B's GP fits a stopped run by its best logged value, where TPE (its stand-in, see
    METHODS) ranks pruned trials by how far they got, then by their last value."""

    def __init__(self, min_iter: int, eta: int = 3) -> None:
        self.bands = [min_iter * eta**k for k in range(10)]
        self.eta = eta

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        history = _history(trial)
        reached = [b for b in self.bands if b <= len(history)]
        if not reached:
            return False
        band = reached[-1]
        trials = study.get_trials(deepcopy=False)
        at_band = sorted(h[band - 1] for t in trials if len(h := _history(t)) >= band)
        return history[band - 1] > at_band[int(len(at_band) / self.eta)]


class RayAsha(optuna.pruners.BasePruner):
    """Ray Tune's ASHAScheduler (AsyncHyperBandScheduler) at its defaults, as its _Bracket.on_result
    decides: its rungs are grace_period x reduction_factor^k training iterations below max_t (1, 4, 16,
    64; here evaluations 1 and 4 are reached); a trial reaching a rung stops if its value is worse than
    the (1 - 1/reduction_factor) percentile (linear interpolation) of the values recorded there before
    it, any trial's, stopped ones included; the first trial at a rung goes on. Optuna's
    SuccessiveHalvingPruner(min_resource=first evaluation, reduction_factor=4) has the same rungs but
    ranks the trial among the values with its own, and lets only the best of the first three through,
    so it is not used: the two differ on the first trials at each rung and on ties."""

    def __init__(self, grace_period: int = 1, reduction_factor: int = 4, max_t: int = 100) -> None:
        self.rungs = {grace_period * reduction_factor**k for k in range(10)} & set(range(1, max_t))
        self.reduction_factor = reduction_factor

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        history = _history(trial)
        rung = len(history)
        if rung not in self.rungs:
            return False
        # Ray maximises a reward: minimising, the reward is minus the value, as Ray's mode="min" does
        recorded = [
            -h[rung - 1]
            for t in study.get_trials(deepcopy=False)
            if t.number != trial.number and len(h := _history(t)) >= rung
        ]
        if not recorded:
            return False
        return -history[rung - 1] < float(np.nanpercentile(recorded, (1 - 1 / self.reduction_factor) * 100))


def _history(trial: optuna.trial.FrozenTrial) -> list[float]:
    """The values a trial reported, in step order: W&B's and Ray's iterations count these."""
    return [v for _, v in sorted(trial.intermediate_values.items())]


# name: (sampler or None for the sweep file's, for a table: the pruner spec, or the sweep file's, or a
# pruner object where lorasweep's specs cannot say it: the peers' own stopping rules)
Method = tuple[str | None, Callable[[Table], dict | optuna.pruners.BasePruner | None]]
METHODS: dict[str, Method] = {
    RECOMMENDED: (None, lambda t: t.sweep.study.pruner),
    "random": ("random", lambda t: None),
    "grid": ("grid", lambda t: None),
    "TPE, no pruning": ("tpe", lambda t: None),
    "TPE + median pruning": ("tpe", lambda t: {"type": "median", "n_startup_trials": 3}),
    "TPE + ASHA (successive halving, x3)": (
        "tpe",
        lambda t: {"type": "successive_halving", "min_resource": t.first_evaluation, "reduction_factor": 3},
    ),
    "TPE + Hyperband (x3)": (
        "tpe",
        lambda t: {
            "type": "hyperband",
            "min_resource": t.first_evaluation,
            "max_resource": t.steps,
            "reduction_factor": 3,
        },
    ),
    "TPE + curve (lorasweep's)": ("tpe", lambda t: {"type": "curve"}),
    "random + curve (lorasweep's)": ("random", lambda t: {"type": "curve"}),
    ORACLE: ("random", lambda t: None),  # its pruner knows the table: see OraclePruner
    # transformers' Trainer.hyperparameter_search(backend="optuna") with no kwargs:
    # transformers/integrations/integration_utils.py, run_hp_search_optuna, calls
    # optuna.create_study(direction=...) without a sampler or pruner, so TPESampler() (10 random
    # startup trials) and create_study's default MedianPruner() (n_startup_trials=5, n_warmup_steps=0).
    # Trainer._report_to_hp_search (trainer.py) reports the objective after every evaluation and
    # raises TrialPruned when should_prune says so, as Replay does. Its objective is eval loss, ours
    # eval perplexity = exp(loss): TPE ranks and the median compares, so both decide alike (bar the
    # midpoint of two middle values when the median falls between them).
    TRANSFORMERS: ("tpe", lambda t: optuna.pruners.MedianPruner()),
    # W&B's bayes is a Gaussian process; Optuna's GPSampler runs on these spaces but at 0.6 s a trial
    # here (30 s a study of 48 trials, so over 20 min for the 40 studies of two tables), so TPE stands
    # in, at its defaults (10 random trials first; W&B's bayes models from two results on): the
    # nearest model-based sampler that fits `make bench`. The stopping rule is W&B's own.
    WANDB: ("tpe", lambda t: WandbHyperband(min_iter=1)),
    # Ray Tune's default search is BasicVariantGenerator (random), and ASHAScheduler() at its defaults
    # (time_attr="training_iteration", grace_period=1, reduction_factor=4, brackets=1, max_t=100): one
    # report is one training_iteration here, as a Trainer reporting per evaluation makes it.
    RAY: ("random", lambda t: RayAsha()),
}


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


def method_sweep(table: Table, method: Method, seed: int) -> Sweep:
    """The task's sweep with this method's sampler, seed and pruner, minimising eval perplexity. The
    grid searches the learning-rate cells' centres (a grid needs a finite space)."""
    sampler, pruner = method
    spec = pruner(table)
    task = table.sweep
    study = dataclasses.replace(
        task.study,
        metrics=("eval_perplexity",),
        directions=("minimize",),
        sampler=sampler or task.study.sampler,
        sampler_options=task.study.sampler_options if sampler is None else {},  # else Optuna's defaults
        seed=seed,
        pruner=None if isinstance(spec, optuna.pruners.BasePruner) else spec,  # run_study takes the object
    )
    space = task.space
    if study.sampler == "grid":
        grid = {**space.distributions, "learning_rate": CategoricalDistribution(table.centres)}
        space = dataclasses.replace(space, distributions=grid)
    return dataclasses.replace(task, study=study, space=space)


def run_study(
    table: Table, method: Method, seed: int, pruner: optuna.pruners.BasePruner | None = None
) -> list[tuple[int, float | None]]:
    sweep = method_sweep(table, method, seed)
    replay = Replay(table, sweep)
    own = method[1](table)  # a fresh pruner object per study (Optuna's Hyperband keeps state in its own)
    if pruner is None and isinstance(own, optuna.pruners.BasePruner):
        pruner = own

    def stop_at_budget(study: optuna.Study, trial) -> None:
        if replay.spent >= table.run_to:
            study.stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the grid sampler's "all grids evaluated" and the like
        study = optuna.create_study(
            sampler=make_sampler(sweep.study, sweep.space),
            pruner=pruner or build_pruner(sweep.study.pruner),
            direction="minimize",
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
    reached: int  # seeds that reached the target within the table's run_to
    trials: float  # median trials within the budget
    pruned_share: float  # of the trials within the budget, over all seeds

    def share(self, table: Table) -> float:
        """Compute to reach random's median final best, as a share of random's budget."""
        return self.steps_to_target / table.budget


@dataclass(frozen=True)
class SearchFigures:
    table: Table
    methods: list[MethodFigures]
    target: float  # random search's final best at the budget, median over seeds
    seeds: int

    def method(self, name: str) -> MethodFigures:
        return next(m for m in self.methods if m.name == name)

    def best_peer(self) -> MethodFigures | None:
        """The peer tool's default setup that reached the target in the fewest steps (None if no peer
        was measured): what lorasweep's recommended setup is held against."""
        peers = [m for m in self.methods if m.name in PEERS]
        return min(peers, key=lambda m: m.steps_to_target, default=None)


def measure(
    name: str = "demo", seeds: int = SEEDS, methods: dict[str, Method] | None = None
) -> SearchFigures:
    table = load_table(name)
    methods = methods or METHODS
    logs = {"random": [run_study(table, methods["random"], seed) for seed in range(seeds)]}
    target = statistics.median(best_at(log, table.budget) for log in logs["random"])
    for label, method in methods.items():
        if label not in logs:
            oracle = OraclePruner(table, target) if label == ORACLE else None
            logs[label] = [run_study(table, method, seed, oracle) for seed in range(seeds)]
    figures = []
    for label in methods:
        runs = logs[label]
        within = [[v for spent, v in log if spent <= table.budget] for log in runs]
        figures.append(
            MethodFigures(
                name=label,
                best={c: statistics.median(best_at(log, c) for log in runs) for c in table.checkpoints},
                steps_to_target=statistics.median(steps_to_reach(log, target) for log in runs),
                reached=sum(steps_to_reach(log, target) <= table.run_to for log in runs),
                trials=statistics.median(len(w) for w in within),
                pruned_share=sum(v is None for w in within for v in w) / max(1, sum(len(w) for w in within)),
            )
        )
    return SearchFigures(table, figures, target, seeds)
