"""The `search_space` section, mapped onto optuna.distributions.

There is deliberately no distribution layer of our own: each entry becomes an Optuna distribution
and a trial samples it through the matching public `suggest_*` call. The one thing Optuna cannot
say is LoRA's habit of tying alpha to the rank, so `lora_alpha: {per_rank: k}` is resolved here
after sampling (k fixed, or itself a searched range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from lorasweep import objectives

from ..errors import Problems
from ._models import MODELS, Choice, FloatRange, IntRange, PerRank, check, entry_tag

Distribution = FloatDistribution | IntDistribution | CategoricalDistribution
# The sampled multiplier behind `lora_alpha: {per_rank: {...}}` is stored under this name.
ALPHA_PER_RANK = "lora_alpha_per_rank"
# The distribution names of Ray Tune, hyperopt and W&B Sweeps, and how a sweep file writes each.
_OTHER_TOOLS_TYPES = {
    "loguniform": "type: float, log: true",
    "log_uniform": "type: float, log: true",
    "log_uniform_values": "type: float, log: true",
    "uniform": "type: float",
    "quniform": "type: float with a step",
    "qloguniform": "type: float, log: true (Optuna samples log ranges without a step)",
    "randint": "type: int",
    "int_uniform": "type: int",
    "lograndint": "type: int, log: true",
    "discrete": "type: choice with values",
    "categorical_values": "type: choice with values",
}


@dataclass(frozen=True)
class SearchSpace:
    """Distributions keyed by the names written in the sweep file, plus the alpha tie."""

    distributions: dict[str, Distribution]
    alpha_per_rank: float | None = None  # a fixed k in lora_alpha = k * r

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Ask the trial for every parameter; return them under the names in the file."""
        return {name: _suggest(trial, name, dist) for name, dist in self.distributions.items()}

    def resolve(self, sampled: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
        """Sampled values over fixed ones, under canonical names, with lora_alpha tied to r."""
        params = dict(fixed)
        for name, value in sampled.items():
            if name != ALPHA_PER_RANK:
                params[objectives.canonical(name)] = value
        k = sampled.get(ALPHA_PER_RANK, self.alpha_per_rank)
        if k is not None:
            params["lora_alpha"] = k * params.get("r", 8)  # 8 is LoraConfig's default rank
        return params

    def searched(self) -> set[str]:
        """Canonical names of the parameters a trial samples (alpha included when tied to r)."""
        names = {objectives.canonical(n) for n in self.distributions if n != ALPHA_PER_RANK}
        tied = self.alpha_per_rank is not None or ALPHA_PER_RANK in self.distributions
        return names | ({"lora_alpha"} if tied else set())

    def largest(self, canonical: str) -> Any | None:
        """The largest value the space can sample for a parameter, or None if it is not searched."""
        for name, dist in self.distributions.items():
            if objectives.canonical(name) == canonical:
                return max(_endpoints(dist))
        return None

    def grid(self) -> dict[str, list[Any]] | None:
        """Every point of a finite space (for the grid sampler), or None if any range is continuous."""
        points = {name: grid_points(dist) for name, dist in self.distributions.items()}
        return None if any(p is None for p in points.values()) else cast(dict[str, list[Any]], points)

    def size(self) -> int | None:
        """How many distinct configurations the space holds; None when it is continuous."""
        grid = self.grid()
        return math.prod(len(v) for v in grid.values()) if grid is not None else None


def _suggest(trial: optuna.Trial, name: str, dist: Distribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_categorical(name, dist.choices)


def describe(dist: Distribution) -> str:
    """A distribution as a sweep file's reader knows it: "one of 8, 16", "int [4, 16]"."""
    if isinstance(dist, CategoricalDistribution):
        return "one of " + ", ".join(map(str, dist.choices))
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    extra = " log" if dist.log else (f" step {dist.step}" if dist.step not in (None, 1) else "")
    return f"{kind} [{dist.low}, {dist.high}]{extra}"


def alpha_tie(space: SearchSpace) -> str:
    """How lora_alpha follows r in a space, as a sweep file's reader knows it. A fixed k is no
    distribution, so a trial's sampled parameters cannot show it: continuing a study compares this."""
    if ALPHA_PER_RANK in space.distributions:
        return "a sampled per_rank x r"  # its range is a distribution, compared as the others are
    if space.alpha_per_rank is not None:
        return f"{space.alpha_per_rank:g} x r"
    return "not tied to r"


def stored_alpha_tie(text: str) -> str | None:
    """alpha_tie of a sweep file's text stored with a study, reading its search_space alone (a file
    an older version stored may no longer load whole); None where even that cannot be read."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(raw, dict):
        return None
    problems = Problems()  # the stored file's problems are not this run's: only the tie is wanted
    return alpha_tie(parse_space(raw.get("search_space"), problems, {}))


def grid_points(dist: BaseDistribution) -> list[Any] | None:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        count = round((dist.high - dist.low) / dist.step) + 1
        return [round(dist.low + i * dist.step, 12) for i in range(count)]
    return None


def mapping(raw: Any, section: str, of: str, problems: Problems) -> dict[Any, Any]:
    """A section that maps names to values (search_space, train), or {} with the problem added."""
    if isinstance(raw, dict | None):
        return raw or {}
    problems.add((section,), f"{section} must be a mapping of {of}, but got a {type(raw).__name__}.")
    return {}


def parse_space(raw: Any, problems: Problems, fixed: dict[str, Any]) -> SearchSpace:
    """Check the `search_space` mapping and build the space; problems are collected, not raised."""
    distributions: dict[str, Distribution] = {}
    alpha_per_rank: float | None = None
    seen: dict[str, str] = {}
    for name, spec in mapping(raw, "search_space", "parameter names to ranges", problems).items():
        canonical = _parameter(str(name), seen, fixed, problems)
        entry = _entry(str(name), spec, problems) if canonical is not None else None
        if isinstance(entry, PerRank):
            if canonical != "lora_alpha":
                problems.add(
                    ("search_space", name),
                    f"per_rank ties lora_alpha to r, but got it on {name!r}. "
                    "Give it a range: {type: float, low: ..., high: ...}.",
                )
            elif isinstance(entry.per_rank, float | int):
                alpha_per_rank = entry.per_rank
            else:
                distributions[ALPHA_PER_RANK] = _distribution(entry.per_rank)
        elif entry is not None and canonical is not None:
            dist = _distribution(entry)
            wrong = [objectives.type_problem(canonical, v) for v in _endpoints(dist)]
            if any(wrong):
                problems.add(("search_space", name), next(w for w in wrong if w))
            else:
                distributions[str(name)] = dist
    return SearchSpace(distributions, alpha_per_rank)


def _parameter(name: str, seen: dict[str, str], fixed: dict[str, Any], problems: Problems) -> str | None:
    """The canonical name of a searched parameter, or None if the name is unknown or searched twice."""
    path = ("search_space", name)
    canonical = objectives.canonical(name)
    if objectives.target_of(canonical) is None:
        problems.add(path, objectives.unknown_name_message(name))
        problems.note(objectives.valid_names_text())
        return None
    if canonical in seen:
        problems.add(
            path,
            f"each parameter must be searched once, but got both "
            f"{seen[canonical]!r} and {name!r} (aliases of {canonical!r}). Keep one.",
        )
        return None
    seen[canonical] = name
    if canonical in fixed:
        problems.add(
            path,
            f"a parameter must be either searched or fixed, but got {name!r} in both search_space and "
            "train. Remove one.",
        )
    return canonical


Entry = FloatRange | IntRange | Choice | PerRank


def _entry(name: str, spec: Any, problems: Problems) -> Entry | None:
    """One search_space entry as its model (the `type` picks which), or None with its problems added."""
    path = ("search_space", name)
    if not isinstance(spec, dict):
        problems.add(
            path,
            f"{name} must be a mapping with a type, but got {name}={spec!r}. Example: {name}: {{type: float, "
            "low: 1e-5, high: 1e-3, log: true}. Fixed values belong in the train section.",
        )
        return None
    model = MODELS.get(entry_tag(spec) or "")
    if model is None:
        kind = spec.get("type")
        written = _OTHER_TOOLS_TYPES.get(str(kind).lower())
        hint = f" For {kind} write {written}." if written else ""
        problems.add(path, f"{name}.type must be one of float, int, choice, but got type={kind!r}.{hint}")
        return None
    return cast(Entry | None, check(model, spec, problems, path, partial=False))


def _distribution(entry: FloatRange | IntRange | Choice) -> Distribution:
    if isinstance(entry, Choice):
        return CategoricalDistribution(entry.values)
    if isinstance(entry, IntRange):
        return IntDistribution(entry.low, entry.high, log=entry.log, step=entry.step or 1)
    return FloatDistribution(entry.low, entry.high, log=entry.log, step=entry.step)


def _endpoints(dist: Distribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]
