"""How a study searches: the Optuna sampler that proposes each trial's parameters, and the pruner
that stops trials whose learning curves lag.

`study.sampler` (or the Olive format's `search_strategy.type`) names a sampler, seeded by
`study.sampler.seed`, with the Optuna sampler's own options beside them
(`sampler: {type: tpe, seed: 0, n_startup_trials: 4, multivariate: true}`); on a space with
conditions, TPE defaults to `multivariate: true, group: true` (conditional_options). `study.pruner` is a
name, or a mapping of a name and the Optuna pruner's own options:

    pruner: median
    pruner: {type: median, n_startup_trials: 3, n_warmup_steps: 20}
    pruner: {type: patient, patience: 2, wrapped: {type: median, n_startup_trials: 3}}
    pruner: {type: curve, k: 1, n_startup_trials: 3}     (lorasweep's learning-curve pruner, _curve)

The options are the pruner classes' constructor arguments, checked against their signatures, and
the pruner is built once while the file is checked, so Optuna's own validation speaks then too.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna
from optuna.pruners import BasePruner

from lorasweep.objectives import did_you_mean

from ._curve import CurvePruner
from ._fresh import FreshSampler
from .errors import Problems, unknown_key

if TYPE_CHECKING:
    from .sweepfile import SearchSpace, StudySpec

SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
    "gp": optuna.samplers.GPSampler,
}

PRUNERS: dict[str, type[BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "patient": optuna.pruners.PatientPruner,
    "curve": CurvePruner,  # lorasweep's own: extrapolates each learning curve (_curve)
}
_WRAPPED = "wrapped"  # PatientPruner's wrapped_pruner, itself a pruner spec


def make_sampler(study: StudySpec, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The study's sampler over `space`. The grid sampler as it is: it hands out grid points by trial
    number and skips those finished or running. Any other draws each trial from its own seeded stream
    and avoids configurations the study holds (_fresh: a continued study would replay its past)."""
    seed, kind, options = study.seed, study.sampler, study.sampler_options
    if kind == "grid":
        return optuna.samplers.GridSampler(space.grid() or {}, seed=seed)  # checked finite by load_sweep
    return FreshSampler(lambda trial_seed: _sampler(kind, options, trial_seed), space, seed)


def conditional_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """The sampler's options for a space with conditions (`when:`). TPE: multivariate TPE over the
    groups of parameters that trials sample together (`multivariate: true, group: true`), the
    setting Optuna documents for conditional spaces; plain TPE models each parameter alone, and
    multivariate TPE without groups models only the parameters every trial has. The file's own
    multivariate or group wins; multivariate: false keeps the independent TPE."""
    if kind != "tpe" or options.get("multivariate") is False:
        return options
    return {"multivariate": True, "group": True, **options}


def _sampler(kind: str, options: dict[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # multivariate TPE and the like are "experimental": fine by us
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[kind](seed=seed, **options)


def parse_sampler_options(kind: str, options: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """The Optuna sampler's own options (`study.sampler: {type: tpe, n_startup_trials: 4}`), checked
    against its constructor's signature and then by Optuna itself; problems are collected."""
    where = ("study", "sampler")
    # What a sweep file can say: options of plain types (not the functions and samplers some take,
    # such as gamma or constraints_func), and not the seed, which is a key of its own.
    accepted = {
        name: types
        for name, p in inspect.signature(SAMPLERS[kind]).parameters.items()
        if name != "seed" and (types := _plain_types(p.annotation))
    }
    before = len(problems.items)
    for key, value in options.items():
        if key not in accepted:
            problems.add(
                (*where, key),
                f"the {kind} sampler takes {', '.join(['type', 'seed', *accepted])}, but got {key}="
                f"{value!r}.{did_you_mean(key, list(accepted))}",
            )
        elif not _is_a(value, accepted[key]):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in accepted[key])
            problems.add((*where, key), f"study.sampler.{key} must be {names}, but got {key}={value!r}.")
    if len(problems.items) > before or not options:
        return {}
    try:
        _sampler(kind, options, 0)
    except (TypeError, ValueError) as e:  # Optuna's own checks: n_startup_trials >= 0, and so on
        problems.add(where, f"the {kind} sampler's options must be valid, but Optuna said: {e}")
        return {}
    return options


def _plain_types(annotation: Any) -> tuple[type, ...]:
    """The types of an annotation such as 'int | None' (Optuna's are strings); () if any part of it
    is not a plain YAML type."""
    plain = {"bool": bool, "int": int, "float": float, "str": str, "None": type(None)}
    parts = [part.strip() for part in str(annotation).split("|")]
    return tuple(plain[p] for p in parts) if all(p in plain for p in parts) else ()


def _is_a(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # YAML's true is no count
        return bool in types
    return isinstance(value, types) or (isinstance(value, int) and float in types)


def build_pruner(spec: dict[str, Any] | None) -> BasePruner:
    """The Optuna pruner for a checked spec; no spec: no pruning."""
    if spec is None:
        return optuna.pruners.NopPruner()
    options = {k: v for k, v in spec.items() if k != "type"}
    if spec["type"] == "patient":
        options["wrapped_pruner"] = build_pruner(options.pop(_WRAPPED, None))
    with warnings.catch_warnings():  # PatientPruner is "experimental" since Optuna 2.8: fine by us
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return PRUNERS[spec["type"]](**options)


def parse_pruner(
    raw: Any, problems: Problems, n_metrics: int, where: tuple[Any, ...] = ("study", "pruner")
) -> dict[str, Any] | None:
    """The pruner spec as {type: name, **options}, or None for no pruning; problems are collected."""
    if raw is None:
        return None
    spec = {"type": raw} if isinstance(raw, str) else raw
    if not isinstance(spec, dict) or spec.get("type") not in PRUNERS:
        name = spec.get("type") if isinstance(spec, dict) else raw
        problems.add(where, unknown_key("the pruner", name, PRUNERS))
        return None
    kind = spec["type"]
    if kind == "none":
        return None
    if n_metrics > 1:
        problems.add(
            where,
            f"a pruner needs a single-objective study (Optuna cannot prune several objectives), "
            f"but got pruner={kind!r} with {n_metrics} metrics. Drop the pruner or keep one metric.",
        )
        return None
    accepted = [p for p in inspect.signature(PRUNERS[kind]).parameters if p != "wrapped_pruner"]
    if kind == "patient":
        accepted.append(_WRAPPED)
    before = len(problems.items)
    for key in [k for k in spec if k not in {"type", *accepted}]:  # in file order
        problems.add(
            (*where, key),
            f"the {kind} pruner takes {', '.join(accepted) or 'no options'}, but got {key}="
            f"{spec[key]!r}.{did_you_mean(key, accepted)}",
        )
    checked = dict(spec)
    if kind == "patient" and spec.get(_WRAPPED) is not None:
        checked[_WRAPPED] = parse_pruner(spec[_WRAPPED], problems, n_metrics, (*where, _WRAPPED))
    if len(problems.items) > before:
        return None
    try:
        build_pruner(checked)
    except (TypeError, ValueError) as e:  # Optuna's own checks: percentile in [0, 100], and so on
        problems.add(where, f"the {kind} pruner's options must be valid, but Optuna said: {e}")
        return None
    return checked
