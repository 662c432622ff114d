"""The learning-curve pruner (`study.pruner: {type: curve}`): stop a trial whose eval curve, carried on
to the last step, is unlikely to beat the k-th best finished curve.

Optuna's pruners compare a trial with the others at the same step (median, percentile) or by rungs
(successive halving, Hyperband): none asks where the trial's curve is going. Learning-curve
extrapolation (Domhan et al. 2015; LC-PFN, Adriaensen et al. 2023) does, and no well-kept library
ships it for Optuna, so it is written here, small. At each report it predicts the trial's value at
the last step two ways:

- from its peers: the trial's value now, times each finished trial's ratio of its last value to its
  value at this step. This needs one point, so it can stop a hopeless trial at its first evaluation;
- from its own curve, once it has three points: the better of a power law y = a + b t^-c and an
  exponential y = a + b e^(-t/tau), each the least-squares fit over a grid of c (or tau).

The trial is stopped when fewer than `min_chance` of the peer predictions reach the k-th best
finished trial's last value and its own fit (where it has one) does not reach it either: both
experts must agree that the trial is hopeless, so a trial that learns late, unlike its peers, runs on.
Values are compared in the study's direction, as Optuna's own pruners do.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

_EXPONENTS = np.geomspace(0.05, 4.0, 24)  # power-law c: flat-ish to steep curves
_TIMESCALES = np.geomspace(0.05, 2.0, 24)  # exponential tau, as a share of the last step


class CurvePruner(BasePruner):
    """Prune a trial whose extrapolated final value is unlikely to beat the k-th best finished trial.

    k: the rank among finished trials to beat (1: the best; larger prunes less).
    n_startup_trials: finished trials needed before any pruning.
    n_warmup_steps: no pruning before this step.
    min_chance: the share of peer predictions that must reach the k-th best for the trial to go on.
    """

    def __init__(
        self, k: int = 1, n_startup_trials: int = 3, n_warmup_steps: int = 0, min_chance: float = 0.1
    ) -> None:
        if k < 1 or n_startup_trials < 1 or n_warmup_steps < 0:
            raise ValueError(
                f"k and n_startup_trials must be >= 1 and n_warmup_steps >= 0, but got k={k}, "
                f"n_startup_trials={n_startup_trials}, n_warmup_steps={n_warmup_steps}"
            )
        if not 0.0 < min_chance <= 1.0:
            raise ValueError(f"min_chance must be in (0, 1], but got {min_chance}")
        self.k, self.n_startup_trials = k, n_startup_trials
        self.n_warmup_steps, self.min_chance = n_warmup_steps, min_chance

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        peers = [
            t.intermediate_values for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ]
        peers = [curve for curve in peers if curve]
        if len(peers) < max(self.n_startup_trials, self.k):
            return False
        last = max(max(curve) for curve in peers)
        if step >= last:
            return False
        # Minimising from here on: a maximised study's values are negated.
        sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
        now = sign * trial.intermediate_values[step]
        target = sorted(sign * curve[max(curve)] for curve in peers)[self.k - 1]
        from_peers = [now * ratio for ratio in _ratios(peers, step, sign)]
        if not from_peers:
            return False
        chance = sum(p <= target for p in from_peers) / len(from_peers)
        if chance >= self.min_chance:
            return False
        own = _own_fit(trial.intermediate_values, sign, last)
        return own is None or own > target


def _ratios(peers: list[dict[int, float]], step: int, sign: float) -> list[float]:
    """Each finished curve's last value over its value at `step` (the nearest step before it): how
    much further a curve went from here. Ratios, not differences, so a curve of perplexities and
    one of losses extrapolate alike at any scale."""
    ratios = []
    for curve in peers:
        before = [s for s in curve if s <= step]
        if not before:
            continue
        at, end = sign * curve[max(before)], sign * curve[max(curve)]
        if at * end > 0:
            ratios.append(end / at)
    return ratios


def _own_fit(curve: dict[int, float], sign: float, last: int) -> float | None:
    """The more hopeful of a power law's and an exponential's value at `last`, each the best
    least-squares fit to the curve over a grid of its shape parameter; None under three points."""
    if len(curve) < 3:
        return None
    t = np.array(sorted(curve), dtype=float) / last  # steps as a share of the last: 1 is the end
    y = np.array([sign * curve[s] for s in sorted(curve)])
    families = (
        [(t**-c, 1.0) for c in _EXPONENTS],  # (the basis at the curve's steps, at the end)
        [(np.exp(-t / tau), math.exp(-1 / tau)) for tau in _TIMESCALES],
    )
    finals = [min(_fit(y, basis, end) for basis, end in family)[1] for family in families]
    return min(finals)


def _fit(y: np.ndarray, basis: np.ndarray, end: float) -> tuple[float, float]:
    """y ~ a + b basis by least squares: (the residual, a + b end)."""
    x = np.stack([np.ones_like(basis), basis], axis=1)
    (a, b), *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(np.sum((x @ np.array([a, b]) - y) ** 2)), float(a + b * end)
