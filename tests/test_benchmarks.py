"""The search-efficiency benchmark's recorded table and its replay (no training: the table is shipped).

The timed benchmarks themselves run with `make bench`, never in tests."""

from __future__ import annotations

import sys

import pytest

from lorasweep.search import load_sweep

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import _replay
import record_grid
import refusals


@pytest.fixture(scope="module")
def table() -> _replay.Table:
    return _replay.load_table()


def test_the_recorded_grid_is_the_demo_sweep_as_it_is_now(table):
    """Edit spaces/demo.yaml and this fails: re-record the table with `make bench-grid`."""
    demo = load_sweep(ROOT / "spaces" / "demo.yaml")
    recorded = table.sweep
    assert recorded.space == demo.space and recorded.fixed == demo.fixed
    assert (recorded.model, recorded.data, recorded.eval) == (demo.model, demo.data, demo.eval)
    assert recorded.study.pruner == demo.study.pruner
    keys = {
        (c["lr_cell"], c["lora_r"], c["lora_alpha_per_rank"], c["batch_size"])
        for c in record_grid.configurations()
    }
    assert set(table.entries) == keys


def test_every_recorded_trial_has_its_curve_and_result(table):
    for entry in table.entries.values():
        assert sorted(entry["curve"]) == [20, 40, 60, 80, 100] or "failed" in entry
        assert "failed" in entry or entry["metrics"]["eval_perplexity"] > 1.0


def test_replay_charges_each_trial_the_steps_it_trained(table, monkeypatch):
    monkeypatch.setattr(_replay, "RUN_TO", 1500)
    pruned = _replay.run_study(table, "tpe", True, seed=0)
    costs = [b[0] - a[0] for a, b in zip([(0, None), *pruned], pruned)]
    assert all(c == 100 for c, (_, v) in zip(costs, pruned) if v is not None)  # complete: every step
    stopped = [c for c, (_, v) in zip(costs, pruned) if v is None]
    assert stopped and all(c in (20, 40, 60, 80) for c in stopped)  # pruned: up to the evaluation
    assert pruned[-1][0] >= 1500 > pruned[-2][0]  # it stops once the budget is spent
    unpruned = _replay.run_study(table, "random", False, seed=0)
    assert all(v is not None for _, v in unpruned)


def test_best_and_steps_to_target_read_the_log_in_order():
    log = [(100, 3.0), (120, None), (220, 2.0), (320, 2.5)]
    assert _replay.best_at(log, 99) == float("inf") and _replay.best_at(log, 250) == 2.0
    assert _replay.steps_to_reach(log, 2.5) == 220 and _replay.steps_to_reach(log, 1.0) == float("inf")


def test_the_refusals_table_runs_its_cases_as_a_user_would():
    """One case of `make bench-refusals`, through the real command: the harness reads what it shows."""
    (case,) = [c for c in refusals.CASES if c.what == "`sampler: bayes`"]
    outcome = refusals.run(case)
    assert outcome.code == 2 and outcome.lines == 1 and outcome.peak_mib > 0
    assert outcome.said.startswith("s.yaml:1: the sampler must be one of") and "'tpe' here" in outcome.said
