"""The search-efficiency benchmark's recorded table and its replay (no training: the table is shipped).

The timed benchmarks themselves run with `make bench`, never in tests."""

from __future__ import annotations

import sys

import optuna
import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import _faults_inputs
import _replay
import record_grid
import refusals


@pytest.fixture(scope="module", params=sorted(_replay.GRIDS))
def table(request) -> _replay.Table:
    return _replay.load_table(request.param)


def test_each_recorded_grid_trains_as_its_sweep_file_does_now(table):
    """Edit what a trial of spaces/demo.yaml or phrase.yaml trains and this fails: re-record the table
    (`make bench-grid`, `make bench-grid-phrase`). The study settings may change: they are replayed."""
    recorded, now = _replay.recorded_sweep(table.name), table.sweep
    assert recorded.space == now.space and recorded.fixed == now.fixed
    assert (recorded.model, recorded.data, recorded.eval) == (now.model, now.data, now.eval)
    keys = {
        (c["lr_cell"], c["lora_r"], c["lora_alpha_per_rank"], c["batch_size"])
        for c in record_grid.configurations(now.path)
    }
    assert set(table.entries) == keys


def test_every_recorded_trial_has_its_curve_and_result(table):
    every = table.sweep.fixed["eval_steps"]
    steps = list(range(every, table.steps + 1, every))
    for entry in table.entries.values():
        assert sorted(entry["curve"]) == steps or "failed" in entry
        assert "failed" in entry or entry["metrics"]["eval_perplexity"] > 1.0


def test_replay_charges_each_trial_the_steps_it_trained(table, monkeypatch):
    monkeypatch.setattr(_replay, "BUDGET_TRIALS", 7.5)  # every study runs to 15 full trials' steps
    pruned = _replay.run_study(table, _replay.METHODS["TPE + median pruning"], seed=0)
    costs = [b[0] - a[0] for a, b in zip([(0, None), *pruned], pruned, strict=False)]  # start and end of each
    assert all(
        c == table.steps for c, (_, v) in zip(costs, pruned, strict=True) if v is not None
    )  # every step
    stopped = [c for c, (_, v) in zip(costs, pruned, strict=True) if v is None]
    evaluations = set(range(table.first_evaluation, table.steps, table.first_evaluation))
    assert stopped and set(stopped) <= evaluations  # pruned: up to the evaluation that stopped it
    assert pruned[-1][0] >= table.run_to > pruned[-2][0]  # it stops once the budget is spent
    unpruned = _replay.run_study(table, _replay.METHODS["random"], seed=0)
    assert all(v is not None for _, v in unpruned)


def test_the_oracle_row_is_a_floor_no_sampler_pruned_alike_can_beat():
    methods = {k: _replay.METHODS[k] for k in ("random", _replay.ORACLE, "random + curve (lorasweep's)")}
    figures = _replay.measure("phrase", seeds=3, methods=methods)
    oracle = figures.method(_replay.ORACLE)
    assert oracle.steps_to_target <= figures.method("random + curve (lorasweep's)").steps_to_target
    assert oracle.pruned_share > 0.9 and oracle.reached == 3


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


def test_the_faults_table_reads_what_a_refused_sweep_file_shows(tmp_path):
    """One case of `make bench-faults`, through the real command: a directory and a FIFO named as the
    sweep file, each refused by validate and run; the harness counts and reads the lines they print."""
    row = _faults_inputs.sweep_file_not_a_file(tmp_path)
    assert row.shown.count("exits [2, 2]; one line each, no traceback: True") == 2, row.shown
    assert "a directory" in row.shown and "a FIFO" in row.shown
    assert row.after == "nothing written: True"


def test_the_peer_rows_run_each_peer_as_it_comes(monkeypatch):
    """transformers' row is a study of TPESampler() and create_study's MedianPruner() at their defaults,
    as run_hp_search_optuna makes it; every peer row prunes; bench.py's bar picks the best of them."""
    made = []
    create_study = optuna.create_study

    def spy(**kwargs) -> optuna.Study:
        made.append(study := create_study(**kwargs))
        return study

    monkeypatch.setattr(optuna, "create_study", spy)
    table = _replay.load_table("phrase")
    _replay.run_study(table, _replay.METHODS[_replay.TRANSFORMERS], seed=0)
    sweep = _replay.method_sweep(table, _replay.METHODS[_replay.TRANSFORMERS], seed=0)
    assert (sweep.study.sampler, sweep.study.sampler_options) == ("tpe", {})  # TPESampler's defaults
    pruner = made[-1].pruner
    assert type(pruner) is optuna.pruners.MedianPruner
    assert (pruner._n_startup_trials, pruner._n_warmup_steps) == (5, 0)
    methods = {k: _replay.METHODS[k] for k in ("random", _replay.RECOMMENDED, *_replay.PEERS)}
    figures = _replay.measure("phrase", seeds=2, methods=methods)
    assert all(figures.method(p).pruned_share > 0.3 for p in _replay.PEERS)
    best = figures.best_peer()
    assert best.steps_to_target == min(figures.method(p).steps_to_target for p in _replay.PEERS)


def _study_with_first_values(pruner: optuna.pruners.BasePruner, values: list[float]) -> optuna.Study:
    study = optuna.create_study(pruner=pruner)
    for v in values:
        study.add_trial(optuna.trial.create_trial(value=v, intermediate_values={10: v, 20: v}))
    return study


@pytest.mark.parametrize(("value", "stops"), [(1.7, False), (1.8, True)])
def test_the_ray_row_stops_at_its_rungs_below_the_best_quarter(value, stops):
    """ASHAScheduler's defaults: reduction factor 4, so a trial at the first rung goes on only while
    better than the 25th percentile of the values recorded there (1.75 of 1, 2, 3, 4; 2.0 with x3)."""
    study = _study_with_first_values(_replay.RayAsha(), [1.0, 2.0, 3.0, 4.0])
    trial = study.ask()
    trial.report(value, 10)
    assert trial.should_prune() is stops
    trial.report(9.0, 20)  # the second evaluation is no rung: no decision there
    assert not trial.should_prune()


@pytest.mark.parametrize(("value", "stops"), [(2.5, False), (3.5, True)])
def test_the_wandb_row_keeps_the_best_third_at_each_band(value, stops):
    """W&B's hyperband (eta 3, strict): sorted(every run's value at the band, its own too)[n // 3]."""
    study = _study_with_first_values(_replay.WandbHyperband(min_iter=1), [1.0, 2.0, 3.0, 4.0, 5.0])
    trial = study.ask()
    trial.report(value, 10)
    assert trial.should_prune() is stops
