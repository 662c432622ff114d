"""The carve-out of an eval split: scikit-learn's `train_test_split` (shuffled, stratified when
there are strata), redone in numpy with the very same draws from the same seeded RandomState.

Why not scikit-learn itself: importing `sklearn.model_selection` takes 0.5-1.3 s (scipy comes with
it), paid by every process that loads data, for a split that takes milliseconds. The steps below are
sklearn 1.x's `StratifiedShuffleSplit._iter_indices` and `ShuffleSplit._iter_indices` (one split),
in the same order of random draws, so a seed gives the same rows as before; tests/test_split.py
holds that against scikit-learn on many shapes of data.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil

import numpy as np


def split_indices(
    n_samples: int, eval_fraction: float, seed: int, strata: Sequence[str] | None = None
) -> tuple[list[int], list[int]]:
    """(train, eval) row indices, as `train_test_split(range(n), test_size=eval_fraction,
    random_state=seed, stratify=strata)` returns them. ValueError where scikit-learn raises one: a
    train split that would be empty, or strata that cannot be kept (a stratum of one row, fewer
    rows on a side than strata)."""
    n_test = ceil(eval_fraction * n_samples)
    n_train = n_samples - n_test
    if n_train <= 0:
        raise ValueError(
            f"With n_samples={n_samples} and test_size={eval_fraction}, "
            "the resulting train set will be empty."
        )
    rng = np.random.RandomState(seed)
    if strata is None:
        permutation = rng.permutation(n_samples)
        return permutation[n_test:].tolist(), permutation[:n_test].tolist()

    classes, y_indices, class_counts = np.unique(np.asarray(strata), return_inverse=True, return_counts=True)
    if class_counts.min() < 2 or n_train < len(classes) or n_test < len(classes):
        raise ValueError("the strata cannot be kept on both sides of the split")
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        permuted = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(permuted[: n_i[i]])
        test.extend(permuted[n_i[i] : n_i[i] + t_i[i]])
    # scikit-learn shuffles each side last; the draws matter only for their order, kept the same.
    return rng.permutation(train).tolist(), rng.permutation(test).tolist()


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of n_draws each class gets: its floored share, then the remaining draws to the
    largest remainders, ties broken at random (scikit-learn's `utils.extmath._approximate_mode`)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
