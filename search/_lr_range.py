"""`study.lr_range_test`: before a study's first trial, one learning-rate range test on the trial
side (objectives.LrRangeTester), then the range the sampler draws `learning_rate` from narrowed to
what the test says. The range is recorded on the study (a user attr) and on its MLflow parent run
(a tag); a resumed study, and every worker that joins it, reuses it instead of testing again.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from lorasweep.objectives import LrRangeSpec, LrRangeTester, TrialRunner, trial_spec

from .sweepfile import Sweep

LEARNING_RATE = "learning_rate"
RANGE_ATTR = "lorasweep.lr_range"  # the study's user attr: {low, high, declared, steps, ...}
RANGE_TAG = "lorasweep.lr_range"  # the parent run's tag: "low..high"
TEST_STEPS = 100  # fastai's lr_find default; fewer when a trial trains fewer steps
MIN_POINTS = 5  # a test that blew up sooner than this says nothing about the range
STEEPEST_DIVISOR = 10.0


def narrow(points: Sequence[tuple[float, float]], low: float, high: float) -> tuple[float, float] | None:
    """The range to sample the learning rate from, given a range test's (lr, smoothed loss) points.

    The rule: from the rate of steepest descent / 10 up to the rate where the smoothed loss is
    lowest, clipped to the declared [low, high]. Why: a trial trains about as many steps as the
    test, so the rate at the lowest loss is the largest that still trained in that budget (past it
    the loss turns up; fastai's own upper suggestion); the steepest descent is where the loss fell
    fastest, and a decade below it leaves room for what the test did not try (larger batches and
    ranks of the space, a longer schedule's warmup). The slope is taken per unit of log lr over
    the points before the minimum only: after it the loss rises. None (keep the declared range):
    too few points, or no descent before the minimum."""
    if len(points) < MIN_POINTS:
        return None
    losses = [loss for _, loss in points]
    best = min(range(len(points)), key=losses.__getitem__)
    if best == 0:
        return None
    slopes = [
        (losses[i + 1] - losses[i]) / (math.log(points[i + 1][0]) - math.log(points[i][0]))
        for i in range(best)
    ]
    steepest = min(range(best), key=slopes.__getitem__)
    lo = max(low, points[steepest][0] / STEEPEST_DIVISOR)
    hi = min(high, points[best][0])
    if not hi > lo:
        return None
    return lo, hi


def range_spec(sweep: Sweep) -> LrRangeSpec:
    """What the test trains: the space's middle value of every other parameter (the middle choice,
    the geometric or plain midpoint of a range), the sweep's fixed settings, its seed, and as many
    steps as a trial (at most TEST_STEPS)."""
    dist = _learning_rate(sweep)
    middle = {name: _middle(d) for name, d in sweep.space.distributions.items() if name != LEARNING_RATE}
    params = sweep.space.resolve({**middle, LEARNING_RATE: dist.low}, sweep.fixed)
    max_steps = int(sweep.fixed.get("max_steps", -1) or -1)
    steps = min(TEST_STEPS, max_steps) if max_steps > 0 else TEST_STEPS
    return LrRangeSpec(trial_spec(params, sweep.study.seed or 0), dist.low, dist.high, steps)


def _middle(dist: optuna.distributions.BaseDistribution) -> object:
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[(len(dist.choices) - 1) // 2]
    if isinstance(dist, IntDistribution):
        return (dist.low + dist.high) // 2
    if isinstance(dist, FloatDistribution):
        return math.sqrt(dist.low * dist.high) if dist.log else (dist.low + dist.high) / 2
    raise TypeError(f"a search space holds int, float and categorical distributions, but got {dist!r}")


def _learning_rate(sweep: Sweep) -> FloatDistribution:
    """The searched learning rate's range, which `testable` checked is a float range."""
    dist = sweep.space.distributions[LEARNING_RATE]
    if not isinstance(dist, FloatDistribution):
        raise TypeError(f"learning_rate must be searched as a float range to be narrowed, but got {dist!r}")
    return dist


def testable(sweep: Sweep) -> str | None:
    """Why this sweep's learning rate cannot be narrowed (None: it can)."""
    dist = sweep.space.distributions.get(LEARNING_RATE)
    if not isinstance(dist, FloatDistribution) or dist.step is not None:
        return "learning_rate is not searched as a float range"
    return None


def recorded(study: optuna.Study) -> tuple[float, float] | None:
    """The narrowed range a study recorded, if it did."""
    attr = study.user_attrs.get(RANGE_ATTR)
    return (float(attr["low"]), float(attr["high"])) if attr else None


def with_range(sweep: Sweep, low: float, high: float) -> Sweep:
    """The sweep sampling learning_rate from [low, high] (log as declared)."""
    narrowed = FloatDistribution(low, high, log=_learning_rate(sweep).log)
    distributions = {**sweep.space.distributions, LEARNING_RATE: narrowed}
    return dataclasses.replace(sweep, space=dataclasses.replace(sweep.space, distributions=distributions))


def with_recorded_range(study: optuna.Study, sweep: Sweep) -> Sweep:
    """The sweep as the study samples it: with its recorded range, if it has one."""
    known = recorded(study)
    if known is None or testable(sweep) is not None:
        return sweep
    return with_range(sweep, *known)


def apply(
    study: optuna.Study,
    sweep: Sweep,
    runner: TrialRunner,
    log: Callable[[str], None],
    tag: Callable[[dict[str, str]], None],
) -> Sweep:
    """The sweep the study's trials sample from: narrowed by a range test run now (the study's first
    run), by the range an earlier run recorded, or as declared (with a note saying why)."""
    known = recorded(study)
    if known is not None:
        log(f"lr range test: reusing the study's recorded learning_rate range {known[0]:.3g}..{known[1]:.3g}")
        return with_range(sweep, *known)
    why = testable(sweep)
    if why is None and study.get_trials(deepcopy=False):
        why = "the study has trials sampled from the declared range already"
    if why is None and not isinstance(runner, LrRangeTester):
        why = "the trial runner has no lr_range_test"
    if why is not None:
        log(f"note: lr range test skipped ({why}); learning_rate keeps its declared range")
        return sweep
    spec = range_spec(sweep)
    with tempfile.TemporaryDirectory(prefix="lorasweep-lr-range-") as folder:
        points = runner.lr_range_test(spec, Path(folder))  # type: ignore[attr-defined]
    narrowed = narrow(points, spec.low, spec.high)
    if narrowed is None:
        log(
            f"note: lr range test over {len(points)} steps found no descent to narrow on; "
            f"learning_rate keeps its declared range {spec.low:.3g}..{spec.high:.3g}"
        )
        narrowed = (spec.low, spec.high)
    study.set_user_attr(
        RANGE_ATTR,
        {"low": narrowed[0], "high": narrowed[1], "declared": [spec.low, spec.high], "steps": len(points)},
    )
    tag({RANGE_TAG: f"{narrowed[0]:.6g}..{narrowed[1]:.6g}"})
    log(
        f"lr range test: {len(points)} steps from {spec.low:.3g} to {spec.high:.3g}; learning_rate now "
        f"sampled from {narrowed[0]:.3g}..{narrowed[1]:.3g} (steepest descent / 10 .. lowest loss)"
    )
    return with_range(sweep, *narrowed)
