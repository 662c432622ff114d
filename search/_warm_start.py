"""`study.warm_start: NAME`: a new study starts from an earlier study's best configurations.

The earlier study (same storage, same base model) is read, never written. Its best BEST complete
trials whose parameters fit this study's space are enqueued (Optuna's enqueue_trial) before this
study's first trial, so they are the first configurations this study trains: as this study's own
trials, with this study's MLflow runs, counted in its budget as any trial it runs.

What is not done, on purpose: the earlier study's finished trials are not given to the sampler.
Optuna's samplers read a study's history from its storage, so they would have to be copied in
(add_trial), and then they would be this study's trials to everything else: its budget, `best`,
`report`, `compare`, promote and the trial table, and recovery would look for their MLflow runs
(which this study does not have). Enqueuing the best configurations keeps every one of those
invariants; TPE then learns from them once they have run here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from .errors import UserError
from .record import StudyRecord
from .storage import find_study
from .sweepfile import Sweep, stored_sweep

BEST = 3  # configurations enqueued: enough to seed TPE's first model, few enough to leave it room
FROM_ATTR = "lorasweep.warm_start_from"  # on each enqueued trial: "study#number" it came from


def earlier_study(sweep: Sweep, storage: str | None) -> optuna.Study:
    """The study `study.warm_start` names, checked: in this storage, and on this study's base."""
    name = sweep.study.warm_start
    assert name is not None
    study = find_study(name, storage)
    if study is None:
        raise UserError(
            f"study.warm_start must name a study in this study's storage, but got warm_start={name!r}, which "
            "it does not hold. Fix the name (lorasweep studies lists them), or remove warm_start."
        )
    if StudyRecord.of(study).sweep_text is not None:
        base = stored_sweep(study).model.base
        if base != sweep.model.base:
            raise UserError(
                f"study.warm_start must name a study on the same base model, but got warm_start={name!r}, "
                f"which trained {base!r}, not {sweep.model.base!r}. Name a study on {sweep.model.base!r}."
            )
    return study


def best_fitting(earlier: optuna.Study, sweep: Sweep, k: int = BEST) -> list[tuple[int, dict[str, object]]]:
    """The earlier study's best k complete trials (by its first objective), as (number, params)
    restricted to this space's parameters, keeping only those whose every value fits this space;
    a configuration is taken once."""
    sign = -1.0 if earlier.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    complete = [
        t
        for t in earlier.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values and math.isfinite(t.values[0])
    ]
    complete.sort(key=lambda t: (sign * t.values[0], t.number))
    space = sweep.space.distributions
    chosen: list[tuple[int, dict[str, object]]] = []
    for trial in complete:
        params = {name: value for name, value in trial.params.items() if name in space}
        if not params or not all(_fits(space[name], value) for name, value in params.items()):
            continue
        if any(params == taken for _, taken in chosen):
            continue
        chosen.append((trial.number, params))
        if len(chosen) == k:
            break
    return chosen


def _fits(dist: optuna.distributions.BaseDistribution, value: object) -> bool:
    try:
        return dist._contains(dist.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def enqueue(
    study: optuna.Study, earlier: optuna.Study, sweep: Sweep, budget: int, log: Callable[[str], None]
) -> list[dict[str, object]]:
    """Enqueue the earlier study's best fitting configurations (at most the budget) into a study
    with no trials yet; says what it did in one line. Returns the configurations enqueued."""
    chosen = best_fitting(earlier, sweep, min(BEST, budget))
    for number, params in chosen:
        study.enqueue_trial(params, user_attrs={FROM_ATTR: f"{earlier.study_name}#{number}"})
    if chosen:
        log(
            f"warm start: the {len(chosen)} best configurations of study {earlier.study_name!r} that fit "
            f"this space run first (its trials {', '.join(str(n) for n, _ in chosen)})"
        )
    else:
        log(f"note: warm start: study {earlier.study_name!r} has no complete trial that fits this space")
    return [params for _, params in chosen]
