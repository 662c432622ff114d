"""Issue 27, part 5, "Below the pruning floor": two things pruning cannot do, replayed on the two
recorded tables of item (c) (_replay.py) at equal compute counted in training steps.

- "recommended + lr range test": the sweep file's setup with `study.lr_range_test: true`. The range
  test was run once per table for real, on the tiny base with the table's sweep file settings
  (benchmarks/record_grid.py --lr-range SWEEP OUT: demo_lr_range.json, phrase_lr_range.json); its
  curve goes through lorasweep's own rule (search._lr_range.narrow) and the study samples the
  learning rate from the narrowed range. Its steps are charged before the first trial.
- "recommended + warm start from the other table": `study.warm_start` naming a finished study of
  the other table (the demo's warms the phrase task's, and the other way round), that study being
  the recommended setup run with the same seed to its budget (24 full trials' steps). Its best
  configurations that fit this space (search._warm_start.best_fitting: the batch sizes differ,
  [8, 16, 32] against [4, 8, 16]) are enqueued first; its own compute is not charged (it ran
  before, for its own task).

The figures are those of _replay.measure: steps to reach random search's median final best (its
own seeds, as _replay computes it), that as a share of random's budget, and the seeds that reached
it within the table's run_to.

    .venv/bin/python benchmarks/_below_floor.py [SEEDS]
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import warnings
from pathlib import Path

import optuna

import _replay
from lorasweep.search._lr_range import narrow, with_range
from lorasweep.search._warm_start import best_fitting
from lorasweep.search.strategy import build_pruner, make_sampler

LR_RANGES = {
    "demo": Path(__file__).with_name("demo_lr_range.json"),
    "phrase": Path(__file__).with_name("phrase_lr_range.json"),
}
OTHER = {"demo": "phrase", "phrase": "demo"}
LR_ROW = "recommended + lr range test"
WARM_ROW = "recommended + warm start from the other table"
GOAL = 0.25  # of random's compute, on both tables: then the key joins the recommended setup


def range_test(name: str) -> tuple[tuple[float, float] | None, int]:
    """The recorded test's narrowed range under lorasweep's rule, and the steps it cost."""
    raw = json.loads(LR_RANGES[name].read_text(encoding="utf-8"))
    return narrow([tuple(p) for p in raw["curve"]], raw["low"], raw["high"]), int(raw["steps"])


def _study(
    table: _replay.Table, seed: int, *, spent: int = 0, until: int | None = None, enqueue=()
) -> tuple[list[tuple[int, float | None]], optuna.Study]:
    """The recommended setup's study on a table (as _replay.run_study), with `spent` steps charged
    before its first trial and `enqueue`d configurations first; it stops at `until` steps (the
    table's run_to unless said)."""
    sweep = _replay.method_sweep(table, _replay.METHODS[_replay.RECOMMENDED], seed)
    replay = _replay.Replay(table, sweep)
    replay.spent = spent
    stop_at = table.run_to if until is None else until

    def stop(study: optuna.Study, trial) -> None:
        if replay.spent >= stop_at:
            study.stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(
            sampler=make_sampler(sweep.study, sweep.space),
            pruner=build_pruner(sweep.study.pruner),
            direction="minimize",
        )
        for params in enqueue:
            study.enqueue_trial(params)
        study.optimize(replay, callbacks=[stop], catch=(FloatingPointError,))
    return replay.log, study


def _figures(label: str, runs: list, table: _replay.Table, target: float) -> _replay.MethodFigures:
    """As _replay.measure computes them."""
    within = [[v for spent, v in log if spent <= table.budget] for log in runs]
    return _replay.MethodFigures(
        name=label,
        best={c: statistics.median(_replay.best_at(log, c) for log in runs) for c in table.checkpoints},
        steps_to_target=statistics.median(_replay.steps_to_reach(log, target) for log in runs),
        reached=sum(_replay.steps_to_reach(log, target) <= table.run_to for log in runs),
        trials=statistics.median(len(w) for w in within),
        pruned_share=sum(v is None for w in within for v in w) / max(1, sum(len(w) for w in within)),
    )


def measure(name: str, seeds: int = _replay.SEEDS) -> list[_replay.MethodFigures]:
    """The recommended setup, then the two rows of this module, on table `name`."""
    table = _replay.load_table(name)
    random = [_replay.run_study(table, _replay.METHODS["random"], seed) for seed in range(seeds)]
    target = statistics.median(_replay.best_at(log, table.budget) for log in random)
    logs = {_replay.RECOMMENDED: [_study(table, seed)[0] for seed in range(seeds)]}

    narrowed, steps = range_test(name)
    tested = table
    if narrowed is not None:
        tested = dataclasses.replace(table, sweep=with_range(table.sweep, *narrowed))
    logs[LR_ROW] = [_study(tested, seed, spent=steps)[0] for seed in range(seeds)]

    other = _replay.load_table(OTHER[name])
    logs[WARM_ROW] = []
    for seed in range(seeds):
        _, earlier = _study(other, seed, until=other.budget)  # a finished study of the other task
        enqueued = [params for _, params in best_fitting(earlier, table.sweep)]
        logs[WARM_ROW].append(_study(table, seed, enqueue=enqueued)[0])
    return [_figures(label, runs, table, target) for label, runs in logs.items()]


def rows(name: str, figures: list[_replay.MethodFigures], seeds: int) -> list[str]:
    table = _replay.load_table(name)
    narrowed, steps = range_test(name)
    lines = [
        f"{name}: lr range test {steps} steps, learning_rate narrowed to "
        + (f"{narrowed[0]:.3g}..{narrowed[1]:.3g}" if narrowed else "nothing (declared range kept)")
        + f"; random's budget {table.budget} steps"
    ]
    for m in figures:
        best = " / ".join(f"{v:.3f}" for v in m.best.values())
        lines.append(
            f"  {m.name}: best at {'/'.join(map(str, table.checkpoints))} steps {best}; "
            f"{m.steps_to_target:g} steps = {m.share(table):.0%} of random's ({m.reached}/{seeds} "
            f"seeds); {m.trials:g} trials in budget, {m.pruned_share:.0%} pruned"
        )
    return lines


def main(seeds: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shares: dict[str, list[float]] = {}
    for name in _replay.GRIDS:
        figures = measure(name, seeds)
        print("\n".join(rows(name, figures, seeds)), flush=True)
        for m in figures:
            shares.setdefault(m.name, []).append(m.share(_replay.load_table(name)))
    for label in (LR_ROW, WARM_ROW):
        met = all(s <= GOAL for s in shares[label])
        said = " / ".join(f"{s:.0%}" for s in shares[label])
        print(f"{label}: {said} of random's compute -> {'met' if met else 'missed'} (<= 25% on both tables)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else _replay.SEEDS)
