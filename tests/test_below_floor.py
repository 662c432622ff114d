"""Below the pruning floor (issue 27, part 5): `study.lr_range_test` narrows the learning rate the
sampler draws from, once per study; `study.warm_start` runs an earlier study's best configurations
first, as this study's own trials. Stub runners, and one Recipe range test of a few steps."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from lorasweep.objectives import LrRangeSpec, TrialSpec
from lorasweep.search import RunOptions, SweepError, load_sweep, run_sweep
from lorasweep.search._lr_range import RANGE_ATTR, RANGE_TAG, narrow, range_spec
from lorasweep.search._warm_start import FROM_ATTR
from lorasweep.search.errors import UserError

from .test_resilience import curve_runner

SWEEP = """\
study: {{name: {name}, metric: f1, sampler: {{type: tpe, seed: 0}}, n_trials: {n}{extra}}}
train: {{max_steps: 30}}
search_space:
  lora_r: {{type: choice, values: [{ranks}]}}
  learning_rate: {{type: float, low: 1e-5, high: 1e-1, log: true}}
"""


def _sweep(write, name="lr", n=3, extra="", ranks="2, 4, 8, 16", file="sweep.yaml"):
    return load_sweep(write(SWEEP.format(name=name, n=n, extra=extra, ranks=ranks), file))


def _curve(lows: float = 1e-5, highs: float = 1e-1, steps: int = 50) -> list[tuple[float, float]]:
    """A synthetic range test: flat, then the loss falls fastest at 1e-3, is lowest at 1e-2 and
    blows up past it."""
    points = []
    for i in range(steps):
        lr = lows * (highs / lows) ** (i / (steps - 1))
        x = math.log10(lr)
        loss = 5 - 2 * math.tanh(2 * (x + 3)) + (8 * (x + 2) ** 2 if x > -2 else 0.0)
        points.append((lr, loss))
    return points


class RangeRunner:
    """A stub runner with a range test: the synthetic curve, and how often it was asked."""

    def __init__(self) -> None:
        self.stub, self.tests = curve_runner(), []
        self.train_rows, self.footprint = self.stub.train_rows, None

    def evaluate_base(self):
        return self.stub.evaluate_base()

    def run_trial(self, trial, workdir, on_curve=None, deadline=None):
        return self.stub.run_trial(trial, workdir, on_curve, deadline)

    def lr_range_test(self, spec: LrRangeSpec, workdir: Path) -> list[tuple[float, float]]:
        self.tests.append(spec)
        return _curve(spec.low, spec.high)


# -- the narrowing rule -------------------------------------------------------------------------
def test_the_range_runs_from_the_steepest_descent_over_10_to_the_lowest_loss():
    low, high = narrow(_curve(), 1e-5, 1e-1)
    assert 0.7e-4 <= low <= 1.5e-4  # steepest at ~1e-3 (the curve's points are 0.08 decades apart)
    assert 0.8e-2 <= high <= 1.2e-2


def test_the_range_is_clipped_to_the_declared_one_and_a_test_without_descent_narrows_nothing():
    low, high = narrow(_curve(), 2e-4, 5e-3)
    assert (low, high) == (2e-4, 5e-3)
    rising = [(10 ** (-5 + i / 10), 1.0 + i) for i in range(20)]
    assert narrow(rising, 1e-5, 1e-1) is None
    assert narrow(_curve()[:4], 1e-5, 1e-1) is None  # blew up at once: too few points


def test_the_range_test_trains_a_middle_configuration_for_at_most_a_trials_steps(write):
    spec = range_spec(_sweep(write, ranks="2, 4, 8, 16"))
    assert (spec.low, spec.high, spec.steps) == (1e-5, 1e-1, 30)
    assert spec.trial.lora_args["r"] == 4


# -- the keys ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, message",
    [
        (", lr_range_test: yes-please", "study.lr_range_test must be true or false, but got lr_range_test="),
        (", warm_start: 3", "study.warm_start must be the name of an earlier study, but got warm_start=3"),
        (", warm_start: lr", "study.warm_start must name another study, but got warm_start='lr'"),
        (", warm_start: ../x", "study.warm_start must use only letters"),
    ],
)
def test_bad_keys_are_named_with_their_fix(write, extra, message):
    with pytest.raises(SweepError, match=message.replace("(", r"\(")):
        _sweep(write, extra=extra)


def test_a_range_test_needs_a_searched_learning_rate(write):
    text = "study: {name: x, lr_range_test: true}\nsearch_space:\n  lora_r: {type: choice, values: [2, 4]}\n"
    with pytest.raises(
        SweepError, match=re.escape("study.lr_range_test must narrow a searched learning rate")
    ):
        load_sweep(write(text))


def test_a_missing_warm_start_study_stops_the_run_before_anything_is_written(stores, write):
    sweep = _sweep(write, name="new", extra=", warm_start: nosuch")
    wanted = "study.warm_start must name a study in this study's storage, but got warm_start='nosuch'"
    with pytest.raises(UserError, match=wanted):
        run_sweep(sweep, RunOptions(quiet=True, plots=False), runner=curve_runner())
    assert not Path("mlruns/optuna.journal").exists()


# -- the range test in a study ------------------------------------------------------------------
def test_a_study_narrows_once_records_the_range_and_a_resume_reuses_it(stores, write, capsys):
    sweep = _sweep(write, extra=", lr_range_test: true")
    runner = RangeRunner()
    study = run_sweep(sweep, RunOptions(n_trials=3, plots=False), runner=runner)
    low, high = study.user_attrs[RANGE_ATTR]["low"], study.user_attrs[RANGE_ATTR]["high"]
    assert (low, high) == narrow(_curve(), 1e-5, 1e-1)
    assert all(low <= t.params["learning_rate"] <= high for t in study.trials)
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("lr range test:")]
    assert len(said) == 1 and f"{low:.3g}..{high:.3g}" in said[0]
    client = MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db")
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.data.tags[RANGE_TAG] == f"{low:.6g}..{high:.6g}"

    study = run_sweep(sweep, RunOptions(n_trials=6, plots=False), runner=runner)  # resumed: no refusal
    assert len(runner.tests) == 1  # not tested again
    assert "reusing the study's recorded learning_rate range" in capsys.readouterr().out
    assert len(study.trials) == 6
    assert all(low <= t.params["learning_rate"] <= high for t in study.trials)


def test_a_runner_without_a_range_test_keeps_the_declared_range_with_a_note(stores, write, capsys):
    sweep = _sweep(write, extra=", lr_range_test: true")
    study = run_sweep(sweep, RunOptions(n_trials=2, plots=False), runner=curve_runner())
    assert RANGE_ATTR not in study.user_attrs and len(study.trials) == 2
    assert "note: lr range test skipped (the trial runner has no lr_range_test)" in capsys.readouterr().out


# -- warm start ---------------------------------------------------------------------------------
def test_warm_start_runs_the_earlier_studys_best_fitting_configurations_first_as_this_studys_own(
    stores, write
):
    old = _sweep(write, name="old", n=4, ranks="2, 4, 8, 16")
    earlier = run_sweep(old, RunOptions(quiet=True, plots=False), runner=curve_runner())
    # f1 = r / 10: the best configurations are the highest ranks; 16 does not fit the new space
    ranked = sorted(earlier.trials, key=lambda t: -t.value)
    fitting = [t for t in ranked if t.params["lora_r"] != 16][:3]
    sweep = _sweep(write, name="new", n=4, ranks="2, 4, 8", extra=", warm_start: old", file="new.yaml")
    study = run_sweep(sweep, RunOptions(quiet=True, plots=False), runner=curve_runner())

    assert len(study.trials) == 4  # its budget, the enqueued included; none of the earlier's
    first = study.trials[: len(fitting)]
    assert [t.params for t in first] == [t.params for t in fitting]
    assert [t.user_attrs[FROM_ATTR] for t in first] == [f"old#{t.number}" for t in fitting]
    assert all(t.state.name == "COMPLETE" and "mlflow_run_id" in t.user_attrs for t in study.trials)
    assert len(earlier.trials) == 4  # the earlier study is read, never written
    again = run_sweep(sweep, RunOptions(n_trials=5, quiet=True, plots=False), runner=curve_runner())
    assert len(again.trials) == 5  # a resume enqueues nothing again


# -- the trial side -----------------------------------------------------------------------------
def test_a_recipe_range_test_on_the_tiny_base_returns_a_rising_lr_curve(tmp_path):
    from lorasweep.objectives import DataSpec, EvalSpec, ModelSpec, Recipe

    data = DataSpec(train_split="train[:240]", eval_fraction=0.25)
    recipe = Recipe(ModelSpec(), data, EvalSpec(max_samples=4, max_new_tokens=2))
    trial = TrialSpec(
        training_args={"per_device_train_batch_size": 8, "max_steps": 6}, lora_args={"r": 2, "lora_alpha": 2}
    )
    points = recipe.lr_range_test(LrRangeSpec(trial, 1e-4, 1e-2, steps=6), tmp_path)
    lrs = [lr for lr, _ in points]
    assert len(points) == 6
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-2)
    assert all(a < b for a, b in itertools.pairwise(lrs))
    assert all(math.isfinite(loss) and loss > 0 for _, loss in points)


# -- the replay's recorded range tests ------------------------------------------------------------
@pytest.mark.parametrize("name", ["demo", "phrase"])
def test_the_recorded_range_tests_are_what_the_sweep_files_would_run_and_keep_the_best(name):
    """benchmarks/*_lr_range.json: the test study.lr_range_test runs for the shipped sweep file
    today (same settings, steps and seed), and its narrowed range keeps the table's best
    configuration."""
    import json
    import sys

    from .conftest import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _below_floor
    import _replay

    raw = json.loads(_below_floor.LR_RANGES[name].read_text(encoding="utf-8"))
    spec = range_spec(load_sweep(ROOT / raw["sweep_file"]))
    recorded = (raw["low"], raw["high"], raw["planned_steps"], raw["seed"])
    assert recorded == (spec.low, spec.high, spec.steps, spec.trial.seed)
    assert raw["trial"] == {"training_args": spec.trial.training_args, "lora_args": spec.trial.lora_args}
    (low, high), steps = _below_floor.range_test(name)
    assert steps == len(raw["curve"]) and low > raw["low"]
    table = _replay.load_table(name)
    best = min(table.entries.values(), key=lambda e: e.get("metrics", {}).get("eval_perplexity", math.inf))
    assert low <= best["learning_rate"] <= high
