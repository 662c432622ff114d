"""lorasweep's learning-curve pruner (`study.pruner: {type: curve}`) and the samplers' own options."""

from __future__ import annotations

import optuna
import pytest

from lorasweep.search import SweepError, load_sweep
from lorasweep.search._curve import CurvePruner
from lorasweep.search.strategy import build_pruner, make_sampler

# Finished curves (eval loss at steps 20..100): they fall by about a third after step 20.
PEERS = [
    {20: 3.0, 40: 2.4, 60: 2.2, 80: 2.1, 100: 2.0},
    {20: 2.7, 40: 2.2, 60: 1.9, 80: 1.85, 100: 1.8},
    {20: 4.0, 40: 3.4, 60: 3.0, 80: 2.9, 100: 2.8},
]


def _study(direction: str = "minimize", peers=PEERS, sign: float = 1.0, **options) -> optuna.Study:
    study = optuna.create_study(direction=direction, pruner=CurvePruner(**options))
    for curve in peers:
        study.add_trial(
            optuna.trial.create_trial(
                value=sign * curve[max(curve)],
                intermediate_values={s: sign * v for s, v in curve.items()},
                state=optuna.trial.TrialState.COMPLETE,
            )
        )
    return study


def _pruned_at(study: optuna.Study, curve: dict[int, float], sign: float = 1.0) -> int | None:
    trial = study.ask()
    for step, value in sorted(curve.items()):
        trial.report(sign * value, step)
        if trial.should_prune():
            return step
    return None


def test_a_hopeless_trial_stops_at_its_first_evaluation_and_a_promising_one_runs_on():
    study = _study()
    assert _pruned_at(study, {20: 9.0, 40: 8.0}) == 20  # 9.0 x the best ratio (0.67) is far above 1.8
    assert _pruned_at(study, {20: 2.5, 40: 1.9, 60: 1.7, 80: 1.6, 100: 1.55}) is None


def test_a_trial_that_learns_unlike_its_peers_is_kept_by_its_own_curve():
    """Peers that flatten after step 60 (they end at 0.95 of their value there) say a trial at 2.02
    cannot reach the best (1.9); but this trial's own three points fall steeply enough that its fitted
    curve ends below 1.9, so it runs on. The same trial flattening at 2.3 is stopped there."""
    late = {20: 4.0, 40: 2.4, 60: 2.0, 80: 1.95, 100: 1.9}
    study = _study(peers=[{s: v * f for s, v in late.items()} for f in (1.0, 1.05, 1.1)])
    assert _pruned_at(study, {20: 3.8, 40: 2.4, 60: 2.02, 80: 1.8, 100: 1.7}) is None
    assert _pruned_at(study, {20: 3.8, 40: 2.4, 60: 2.3, 80: 2.25, 100: 2.2}) == 60


def test_a_maximised_study_compares_its_negated_losses_the_same_way():
    study = _study("maximize", sign=-1.0)
    assert _pruned_at(study, {20: 9.0}, sign=-1.0) == 20
    assert _pruned_at(study, {20: 2.5, 40: 1.9}, sign=-1.0) is None


def test_no_pruning_before_enough_finished_trials_or_the_warmup():
    assert _pruned_at(_study(peers=PEERS[:2]), {20: 9.0}) is None  # n_startup_trials=3
    assert _pruned_at(_study(n_warmup_steps=40), {20: 9.0, 40: 8.0}) == 40
    larger_k = _study(k=3)  # the 3rd best (2.8) is easier to beat than the best
    assert _pruned_at(larger_k, {20: 3.9, 40: 3.0}) is None


def test_the_curve_pruner_is_a_sweep_file_pruner_with_checked_options(write):
    spec = load_sweep(write("study: {pruner: {type: curve, k: 2, min_chance: 0.2}}\n")).study.pruner
    pruner = build_pruner(spec)
    assert isinstance(pruner, CurvePruner) and (pruner.k, pruner.min_chance) == (2, 0.2)
    with pytest.raises(SweepError, match=r"the curve pruner's options must be valid.*k=0"):
        load_sweep(write("study: {pruner: {type: curve, k: 0}}\n"))
    with pytest.raises(SweepError, match=r"the curve pruner takes k, n_startup_trials.*Did you mean 'k'"):
        load_sweep(write("study: {pruner: {type: curve, kk: 2}}\n"))


def test_a_samplers_own_options_reach_it_and_wrong_ones_are_refused(write):
    sweep = load_sweep(write("study: {sampler: {type: tpe, seed: 3, n_startup_trials: 2}}\n"))
    assert sweep.study.sampler_options == {"n_startup_trials": 2}
    inner = make_sampler(sweep.study, sweep.space)._make(0)  # the per-trial sampler that FreshSampler builds
    assert isinstance(inner, optuna.samplers.TPESampler) and inner._n_startup_trials == 2
    with pytest.raises(SweepError, match=r"n_startup=2.*Did you mean 'n_startup_trials'"):
        load_sweep(write("study: {sampler: {type: tpe, n_startup: 2}}\n"))
    with pytest.raises(SweepError, match=r"study.sampler.multivariate must be bool"):
        load_sweep(write("study: {sampler: {type: tpe, multivariate: yes please}}\n"))
    with pytest.raises(SweepError, match=r"takes type, seed, but got gamma=3"):
        load_sweep(write("study: {sampler: {type: random, gamma: 3}}\n"))
