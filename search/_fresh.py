"""Each trial's configuration drawn afresh: the sweep's sampler, given a random stream of its own
for every trial, that draws again when it proposes a configuration the study already holds.

Why: an Optuna sampler's random state lives in its process, and every `lorasweep run`, resume or
worker builds it from the seed again, so a continued study drew trial 0's parameters again, then
trial 1's. Optuna's remedy for several processes, `reseed_rng`, gives the seed up. A stream per
trial, from (seed, trial number), keeps both: a seeded sweep samples the same trials however often
it is stopped and continued, and a continued study samples new ones, since its trials have new
numbers. Optuna's samplers take a seed only when they are made, so one is made per draw.

Optuna has no sampler option that avoids what the study already holds (its FAQ reuses the earlier
result, as objective.py still does for what slips through: two workers drawing at one instant).
So, as GridSampler does, the whole configuration is drawn in before_trial and handed out by
sample_independent; it is drawn again, up to MAX_DRAWS times, while another trial holds it, and a
finite space then takes one of its free configurations outright. A trial holds its configuration
whatever its state: finished, running, queued (a retry waits with its parameters) or failed (a
failure that raised would raise again; a dead worker's trial is queued again by _recovery), as
Optuna's grid and brute-force samplers count it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from .sweepfile import SearchSpace

MAX_DRAWS = 16  # draws of one trial before a finite space is searched for a free configuration
_ENUMERABLE = 100_000  # a finite space up to this size is listed to find its free configurations


def configuration(params: Mapping[str, Any]) -> tuple:
    """What makes two trials the same configuration: their parameters, floats to 12 digits (a
    stepped float can come back from storage a last bit off). Used wherever duplicates are told."""
    return tuple(sorted((k, round(v, 12) if isinstance(v, float) else v) for k, v in params.items()))


class FreshSampler(BaseSampler):
    """`make(seed)` builds the sweep's sampler (tpe, random, ...); `seed` is the sweep's (None:
    unseeded). Works for the space's parameters: a configuration holds those a trial samples (with
    conditions, only the active ones), in the order SearchSpace.draw asks for them."""

    def __init__(
        self, make: Callable[[int | None], BaseSampler], space: SearchSpace, seed: int | None
    ) -> None:
        self._make, self._space, self._seed = make, space, seed
        # trial id -> the sampler that drew the trial, and what it drew; until the trial ends
        self._drawn: dict[int, tuple[BaseSampler, dict[str, Any]]] = {}
        self._finished: dict[int, tuple] = {}  # trial id -> configuration, for finished trials

    def reseed_rng(self) -> None:
        """Nothing to do: trials draw from their own streams, which differ between workers because
        trial numbers do."""

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        sampler = self._sampler(trial.number, 0)
        if trial.params or "fixed_params" in trial.system_attrs:  # a retry or an enqueued trial
            self._drawn[trial._trial_id] = (sampler, {})
            return
        taken = self._taken(study, trial.number)
        for attempt in range(MAX_DRAWS):
            if attempt:
                sampler = self._sampler(trial.number, attempt)
            drawn = _draw(sampler, study, trial, self._space)
            if configuration(drawn) not in taken:
                break
        else:
            free = self._free(taken)
            if free:
                drawn = free[
                    np.random.RandomState(self._trial_seed(trial.number, MAX_DRAWS)).randint(len(free))
                ]
        self._drawn[trial._trial_id] = (sampler, drawn)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}  # everything was drawn in before_trial

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        sampler, drawn = self._drawn.get(trial._trial_id) or (self._sampler(trial.number, 0), {})
        if param_name in drawn:
            return drawn[param_name]
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        drawn = self._drawn.pop(trial._trial_id, None)
        sampler = drawn[0] if drawn is not None else self._sampler(trial.number, 0)
        sampler.after_trial(study, trial, state, values)

    def is_exhausted(self, study: optuna.Study) -> bool:
        """Whether every configuration of a finite space is held by a trial (as GridSampler's
        is_exhausted says of its grid)."""
        return self._free(self._taken(study, None)) == []

    def _free(self, taken: set[tuple]) -> list[dict[str, Any]] | None:
        """The configurations of a finite space no trial holds; None when the space is continuous
        or too large to list (then a draw is almost never taken)."""
        size = self._space.size()
        if size is None or size > _ENUMERABLE:
            return None
        return [c for c in self._space.configurations() or [] if configuration(c) not in taken]

    def _taken(self, study: optuna.Study, number: int | None) -> set[tuple]:
        """The configurations the study's trials hold, but trial `number`'s. A finished trial's is
        worked out once: at 1,000 trials, doing it anew for every trial cost a few ms a trial."""
        # From the storage, as Optuna's samplers do: a pruner may hand the sampler a filtered study.
        taken = set()
        for t in study._storage.get_all_trials(study._study_id, deepcopy=False):
            if not t.params or t.number == number:
                continue
            held = self._finished.get(t._trial_id)
            if held is None:
                held = configuration(t.params)
                if t.state.is_finished():  # a running trial may not have all its parameters yet
                    self._finished[t._trial_id] = held
            taken.add(held)
        return taken

    def _trial_seed(self, number: int, attempt: int) -> int | None:
        if self._seed is None:
            return None
        return int(np.random.SeedSequence((self._seed, number, attempt)).generate_state(1)[0])

    def _sampler(self, number: int, attempt: int) -> BaseSampler:
        return self._make(self._trial_seed(number, attempt))


def _draw(
    sampler: BaseSampler, study: optuna.Study, trial: FrozenTrial, space: SearchSpace
) -> dict[str, Any]:
    """One configuration, asked of `sampler` the way a Trial asks it: its relative proposal first,
    the rest one parameter at a time, each only where its condition holds."""
    relative_space = sampler.infer_relative_search_space(study, trial)
    relative = sampler.sample_relative(study, trial, relative_space) if relative_space else {}

    def ask(name: str, dist: BaseDistribution) -> Any:
        if dist.single():  # no draw (a Trial takes the one value itself), but part of the configuration
            return dist.choices[0] if isinstance(dist, CategoricalDistribution) else _low(dist)
        if name in relative and relative_space.get(name) == dist:
            return relative[name]
        return sampler.sample_independent(study, trial, name, dist)

    return space.draw(ask)


def _low(dist: BaseDistribution) -> float:
    """A numeric range's low end (its only value, when the range is one value wide)."""
    if not isinstance(dist, FloatDistribution | IntDistribution):
        raise TypeError(f"a search space holds int, float and categorical distributions, but got {dist!r}")
    return dist.low
