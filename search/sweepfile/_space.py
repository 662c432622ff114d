"""The `search_space` section, mapped onto optuna.distributions.

There is deliberately no distribution layer of our own: each entry becomes an Optuna distribution
and a trial samples it through the matching public `suggest_*` call. The one thing Optuna cannot
say is LoRA's habit of tying alpha to the rank, so `lora_alpha: {per_rank: k}` is resolved here
after sampling (k fixed, or itself a searched range).

Conditions (`when:`) use Optuna's define-by-run API as its documentation does for conditional
spaces: the parameters are asked for in dependency order (parents first, file order otherwise), and
one whose condition does not hold is never asked for, so it is absent from trial.params, from the
trial's MLflow run and from every table. The trial then leaves it unset: the library's default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from lorasweep import objectives

from ..errors import Problems
from ._models import MODELS, Choice, FloatRange, IntRange, PerRank, check, entry_tag

Distribution = FloatDistribution | IntDistribution | CategoricalDistribution
# A parameter's condition: parent (a name of SearchSpace.distributions) -> the values that enable it
Condition = dict[str, tuple[Any, ...]]
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
    """Distributions keyed by the names written in the sweep file, plus the alpha tie and the
    conditions. The distributions come in sampling order: a parameter after the parents it names."""

    distributions: dict[str, Distribution]
    alpha_per_rank: float | None = None  # a fixed k in lora_alpha = k * r
    conditions: dict[str, Condition] = field(default_factory=dict)  # `when:`, by parameter

    def active(self, name: str, values: Mapping[str, Any]) -> bool:
        """Whether `name` is sampled, given its parents' values (a parent absent: its condition fails)."""
        return all(
            parent in values and any(same_value(values[parent], v) for v in allowed)
            for parent, allowed in self.conditions.get(name, {}).items()
        )

    def draw(self, suggest: Callable[[str, Distribution], Any]) -> dict[str, Any]:
        """`suggest(name, distribution)` for every parameter whose condition holds, parents first."""
        drawn: dict[str, Any] = {}
        for name, dist in self.distributions.items():
            if self.active(name, drawn):
                drawn[name] = suggest(name, dist)
        return drawn

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Ask the trial for every active parameter; return them under the names in the file."""
        return self.draw(lambda name, dist: _suggest(trial, name, dist))

    def resolve(self, sampled: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
        """Sampled values over fixed ones, under canonical names, with lora_alpha tied to r. A
        parameter whose condition does not hold is left out, with any default `fixed` holds for it
        (a searched parameter is never fixed in train): the trial uses the library's default."""
        kept: dict[str, Any] = {}
        inactive: set[str] = set()
        for name in self.distributions:  # parents first: a child's condition reads what was kept
            if not self.active(name, kept):
                inactive.add(_canonical(name))
            elif name in sampled:
                kept[name] = sampled[name]
        kept.update({n: v for n, v in sampled.items() if n not in self.distributions})
        params = {k: v for k, v in fixed.items() if k not in inactive}
        for name, value in kept.items():
            if name != ALPHA_PER_RANK:
                params[objectives.canonical(name)] = value
        k = kept.get(ALPHA_PER_RANK, self.alpha_per_rank)
        if k is not None and "lora_alpha" not in inactive:
            params["lora_alpha"] = k * params.get("r", 8)  # 8 is LoraConfig's default rank
        return params

    def searched(self) -> set[str]:
        """Canonical names of the parameters a trial samples (alpha included when tied to r); a
        conditional parameter counts, though some trials leave it out."""
        names = {objectives.canonical(n) for n in self.distributions if n != ALPHA_PER_RANK}
        tied = self.alpha_per_rank is not None or ALPHA_PER_RANK in self.distributions
        return names | ({"lora_alpha"} if tied else set())

    def largest(self, canonical: str) -> Any | None:
        """The largest value the space can sample for a parameter (whether or not its condition
        holds), or None if it is not searched."""
        for name, dist in self.distributions.items():
            if objectives.canonical(name) == canonical:
                return max(_endpoints(dist))
        return None

    def grid(self) -> dict[str, list[Any]] | None:
        """Every point of each parameter of a finite space (the grid sampler's, which load_sweep
        refuses on a space with conditions), or None if any range is continuous."""
        points = {name: grid_points(dist) for name, dist in self.distributions.items()}
        return None if any(p is None for p in points.values()) else cast(dict[str, list[Any]], points)

    def configurations(self) -> list[dict[str, Any]] | None:
        """Every distinct configuration of a finite space, each with its active parameters only;
        None when the space is continuous. Lists them all: check size() first."""
        grid = self.grid()
        if grid is None:
            return None
        every: list[dict[str, Any]] = [{}]
        for name, points in grid.items():
            extended: list[dict[str, Any]] = []
            for c in every:
                extended += [{**c, name: v} for v in points] if self.active(name, c) else [c]
            every = extended
        return every

    def size(self) -> int | None:
        """How many distinct configurations the space holds (those its conditions allow, a
        parameter left out counting once); None when it is continuous."""
        grid = self.grid()
        if grid is None:
            return None
        parents = {p for condition in self.conditions.values() for p in condition}
        names = list(grid)

        def count(i: int, assigned: dict[str, Any]) -> int:
            """Configurations of names[i:], given the parents assigned so far (only parents branch)."""
            if i == len(names):
                return 1
            name = names[i]
            if not self.active(name, assigned):
                return count(i + 1, assigned)
            if name not in parents:
                return len(grid[name]) * count(i + 1, assigned)
            return sum(count(i + 1, {**assigned, name: v}) for v in grid[name])

        return count(0, {})

    def condition_text(self, name: str) -> str:
        """A parameter's condition as a sweep file's reader knows it ("when use_dora = false"), or ""."""
        condition = self.conditions.get(name)
        if not condition:
            return ""
        return "when " + " and ".join(
            f"{written_name(p)} = {_yaml(v[0])}"
            if len(v) == 1
            else f"{written_name(p)} in {', '.join(map(_yaml, v))}"
            for p, v in condition.items()
        )


def same_value(a: Any, b: Any) -> bool:
    """Whether a sampled value is a condition's value: numbers by value (8 is 8.0; floats to 12
    digits, as a stepped float comes back from storage), anything else only as the same type
    (true is not 1)."""
    numbers = (int, float)
    if (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return bool(a == b or round(float(a), 12) == round(float(b), 12))
    return type(a) is type(b) and bool(a == b)


def _canonical(name: str) -> str:
    return "lora_alpha" if name == ALPHA_PER_RANK else objectives.canonical(name)


def written_name(name: str) -> str:
    """A distribution's name as the file writes it."""
    return "lora_alpha.per_rank" if name == ALPHA_PER_RANK else name


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _suggest(trial: optuna.Trial, name: str, dist: Distribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_categorical(name, dist.choices)


def describe(dist: Distribution) -> str:
    """A distribution as a sweep file's reader knows it: "one of 8, 16", "int [4, 16]"."""
    if isinstance(dist, CategoricalDistribution):
        return "one of " + ", ".join(map(_yaml, dist.choices))  # as the file writes them: true, null
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
    whens: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}  # name -> (where, `when` as written)
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
                if entry.per_rank.when is not None:
                    whens[ALPHA_PER_RANK] = (("search_space", name, "per_rank", "when"), entry.per_rank.when)
        elif entry is not None and canonical is not None:
            dist = _distribution(entry)
            wrong = [objectives.type_problem(canonical, v) for v in _endpoints(dist)]
            if any(wrong):
                problems.add(("search_space", name), next(w for w in wrong if w))
            else:
                distributions[str(name)] = dist
                if entry.when is not None:
                    whens[str(name)] = (("search_space", name, "when"), entry.when)
    conditions = {
        name: _condition(name, where, when, distributions, seen, fixed, problems, alpha_per_rank is not None)
        for name, (where, when) in whens.items()
    }
    order = _dependency_order(distributions, conditions, whens, problems)
    return SearchSpace({n: distributions[n] for n in order}, alpha_per_rank, conditions)


def _condition(
    name: str,
    where: tuple[Any, ...],
    when: dict[str, Any],
    distributions: dict[str, Distribution],
    seen: dict[str, str],
    fixed: dict[str, Any],
    problems: Problems,
    alpha_tied: bool,
) -> Condition:
    """One parameter's `when:` as {parent: values}, each parent a searched parameter (under the name
    the file gives it) and each value one the parent can take; problems are collected."""
    child = written_name(name)
    if not when:
        problems.add(
            where,
            f"{child}.when must name at least one parameter, but got when={{}}. "
            "Example: when: {use_dora: false}, or remove when.",
        )
    condition: Condition = {}
    for written, given in when.items():
        at = (*where, written)
        values = tuple(given) if isinstance(given, list) else (given,)
        tied = alpha_tied or ALPHA_PER_RANK in distributions
        parent = _parent(str(written), at, child, distributions, seen, fixed, problems, tied)
        if parent is None:
            continue
        dist = distributions[parent]
        points = grid_points(dist)
        if not values:
            problems.add(
                at,
                f"{child}.when.{written} must list at least one value, but got {written}=[]. "
                f"Give the values of {written} that enable {child}.",
            )
        elif points is None:
            problems.add(
                at,
                f"a condition's parent must take a finite set of values, but got {written}: "
                f"{describe(dist)}, which takes any one value almost never. Give {written} a step, "
                "or make it a choice.",
            )
        else:
            for value in values:
                if not any(same_value(value, p) for p in points):
                    problems.add(
                        at,
                        f"{child}.when.{written} must be values {written} can take "
                        f"({_can_take(dist, points)}), but got {written}={value!r}. Use one of them, or let "
                        f"{written} take it.",
                    )
        condition[parent] = values
    return condition


def _parent(
    written: str,
    at: tuple[Any, ...],
    child: str,
    distributions: dict[str, Distribution],
    seen: dict[str, str],
    fixed: dict[str, Any],
    problems: Problems,
    tied: bool,
) -> str | None:
    """The searched parameter a condition names (by any alias), or None with its problem added (none
    where the parent's own entry is wrong: that entry's problem is the one to fix)."""
    canonical = objectives.canonical(written)
    name = seen.get(canonical)
    if name is not None and name in distributions:
        return name
    if name is not None:
        if canonical == "lora_alpha" and tied:
            problems.add(
                at,
                f"a condition's parent must be a sampled parameter, but got {written}, which follows r "
                "(per_rank). Name r in the condition instead.",
            )
        return None
    if canonical in fixed:
        problems.add(
            at,
            f"a condition's parent must be searched, but got {written} fixed in train "
            f"({written}={fixed[canonical]!r}), which decides the condition alike for every trial. Move "
            f"{written} to search_space, or drop the condition (and fix or search {child} alone).",
        )
        return None
    problems.add(
        at,
        f"a condition's parent must be a parameter of search_space, but got {written!r}."
        f"{objectives.did_you_mean(written, seen.values())} "
        f"Add {written} to search_space, or drop it from {child}.when.",
    )
    return None


def _can_take(dist: Distribution, points: list[Any]) -> str:
    if isinstance(dist, CategoricalDistribution) or len(points) <= 6:
        return "one of " + ", ".join(map(_yaml, points))
    return describe(dist)


def _dependency_order(
    distributions: dict[str, Distribution],
    conditions: dict[str, Condition],
    whens: dict[str, tuple[tuple[Any, ...], dict[str, Any]]],
    problems: Problems,
) -> list[str]:
    """The parameters in sampling order: each after the parents its condition names, file order
    otherwise. A cycle (a when b, b when a; a when a) can never be sampled: it is a problem."""
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in done:
            return
        if name in path:
            cycle = path[path.index(name) :]
            steps = [
                f"{written_name(c)} when {written_name(p)}"
                for c, p in zip(cycle, [*cycle[1:], name], strict=True)
            ]
            problems.add(
                whens[cycle[0]][0],
                f"conditions must not form a cycle (a parent is sampled before what it enables), but got "
                f"{', '.join(steps)}. Drop one of these conditions.",
            )
            return
        path.append(name)
        for parent in conditions.get(name, {}):
            visit(parent, path)
        path.pop()
        done.add(name)
        order.append(name)

    for name in distributions:
        visit(name, [])
    return order


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
