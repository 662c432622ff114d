"""The `search_space` section, mapped onto optuna.distributions.

There is deliberately no distribution layer of our own: each entry becomes an Optuna distribution
and a trial samples it through the matching public `suggest_*` call. The one thing Optuna cannot
say is LoRA's habit of tying alpha to the rank, so `lora_alpha: {per_rank: k}` is resolved here
after sampling (k fixed, or itself a searched range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from lorasweep import objectives

from ..errors import Problems

# The sampled multiplier behind `lora_alpha: {per_rank: {...}}` is stored under this name.
ALPHA_PER_RANK = "lora_alpha_per_rank"
_TYPES = {"float", "int", "choice", "categorical"}
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
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class SearchSpace:
    """Distributions keyed by the names written in the sweep file, plus the alpha tie."""

    distributions: dict[str, BaseDistribution]
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
        return None if any(p is None for p in points.values()) else points

    def size(self) -> int | None:
        """How many distinct configurations the space holds; None when it is continuous."""
        grid = self.grid()
        return math.prod(len(v) for v in grid.values()) if grid is not None else None


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_categorical(name, dist.choices)


def describe(dist: BaseDistribution) -> str:
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


def parse_space(raw: Any, problems: Problems, fixed: dict[str, Any]) -> SearchSpace:
    """Check the `search_space` mapping and build the space; problems are collected, not raised."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.add(
            ("search_space",),
            f"search_space must be a mapping of parameter names to ranges, but got a {type(raw).__name__}.",
        )
        return SearchSpace({})
    distributions: dict[str, BaseDistribution] = {}
    alpha_per_rank: float | None = None
    seen: dict[str, str] = {}
    for name, spec in raw.items():
        path = ("search_space", name)
        canonical = objectives.canonical(str(name))
        if objectives.target_of(canonical) is None:
            problems.add(path, objectives.unknown_name_message(str(name)))
            problems.note(objectives.valid_names_text())
            continue
        if canonical in seen:
            problems.add(
                path,
                f"each parameter must be searched once, but got both "
                f"{seen[canonical]!r} and {name!r} (aliases of {canonical!r}). Keep one.",
            )
            continue
        seen[canonical] = str(name)
        if canonical in fixed:
            problems.add(
                path,
                f"a parameter must be either searched or fixed, but got "
                f"{name!r} in both search_space and train. Remove one.",
            )
        if canonical == "lora_alpha" and isinstance(spec, dict) and "per_rank" in spec:
            k = spec["per_rank"]
            if set(spec) != {"per_rank"}:
                extra = ", ".join(sorted(str(key) for key in set(spec) - {"per_rank"}))
                problems.add(
                    path,
                    f"lora_alpha with per_rank takes only per_rank, but got {extra}. "
                    "Example: lora_alpha: {per_rank: 2}.",
                )
            elif isinstance(k, dict):
                dist = _distribution(k, path + ("per_rank",), problems)
                if dist is not None:
                    distributions[ALPHA_PER_RANK] = dist
            elif _number(k) is not None and _number(k) > 0:
                alpha_per_rank = _number(k)
            else:
                problems.add(
                    path,
                    f"lora_alpha.per_rank must be a positive number or a range, but "
                    f"got per_rank={k!r}. Example: lora_alpha: {{per_rank: 2}}.",
                )
            continue
        dist = _distribution(spec, path, problems)
        if dist is not None:
            wrong = [objectives.type_problem(canonical, v) for v in _endpoints(dist)]
            if any(wrong):
                problems.add(path, next(w for w in wrong if w))
            else:
                distributions[str(name)] = dist
    return SearchSpace(distributions, alpha_per_rank)


def _endpoints(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    return None


def _distribution(spec: Any, path: tuple, problems: Problems) -> BaseDistribution | None:
    name = ".".join(str(p) for p in path[1:])
    example = f"Example: {path[1]}: {{type: float, low: 1e-5, high: 1e-3, log: true}}."
    if not isinstance(spec, dict):
        problems.add(
            path,
            f"{name} must be a mapping with a type, but got {name}={spec!r}. {example} "
            f"Fixed values belong in the train section.",
        )
        return None
    kind = spec.get("type")
    if kind not in _TYPES:
        written = _OTHER_TOOLS_TYPES.get(str(kind).lower())
        hint = f" For {kind} write {written}." if written else ""
        problems.add(path, f"{name}.type must be one of float, int, choice, but got type={kind!r}.{hint}")
        return None
    allowed = (
        {"type", "values"} if kind in ("choice", "categorical") else {"type", "low", "high", "log", "step"}
    )
    for key in set(spec) - allowed:
        problems.add(
            path + (key,),
            f"{name} of type {kind} takes only {', '.join(sorted(allowed))}, "
            f"but got {key}={spec[key]!r}. Remove it.",
        )
    if kind in ("choice", "categorical"):
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            problems.add(path, f"{name}.values must be a non-empty list, but got values={values!r}.")
            return None
        if not all(isinstance(v, _SCALARS) for v in values):
            problems.add(
                path,
                f"{name}.values must hold plain values (numbers, strings, booleans), "
                f"but got values={values!r}.",
            )
            return None
        if len(set(map(repr, values))) != len(values):
            problems.add(path, f"{name}.values must be distinct, but got values={values!r}.")
            return None
        return CategoricalDistribution(values)

    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log", False)
    before = len(problems.items)
    for key, value in (("low", low), ("high", high)):
        if _number(value) is None or (kind == "int" and not isinstance(value, int)):
            problems.add(
                path + (key,),
                f"{name}.{key} must be {'an integer' if kind == 'int' else 'a number'}, "
                f"but got {key}={value!r}.",
            )
    if not isinstance(log, bool):
        problems.add(path + ("log",), f"{name}.log must be true or false, but got log={log!r}.")
    if step is not None and (
        _number(step) is None or step <= 0 or (kind == "int" and not isinstance(step, int))
    ):
        problems.add(
            path + ("step",),
            f"{name}.step must be a positive {'integer' if kind == 'int' else 'number'}, "
            f"but got step={step!r}.",
        )
    if len(problems.items) > before:
        return None
    if low > high:
        problems.add(path, f"{name}.low must be <= high, but got low={low}, high={high}. Swap them.")
        return None
    if log and low <= 0:
        problems.add(
            path,
            f"{name}.low must be > 0 on a log scale, but got low={low}. Use a positive low or log: false.",
        )
        return None
    if log and step is not None and not (kind == "int" and step == 1):
        problems.add(
            path,
            f"{name} must not have both log and step (Optuna samples log ranges "
            f"continuously), but got log=true, step={step}. Drop one.",
        )
        return None
    if kind == "int":
        return IntDistribution(low, high, log=log, step=step or 1)
    return FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step))
