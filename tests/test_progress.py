"""What a sweep prints while it runs (--progress): plain lines for a log, a heartbeat for a long
trial, and no line over MAX_LINE characters."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import optuna
import pytest

import lorasweep
from lorasweep.search import RunOptions, load_sweep, run_sweep
from lorasweep.search.progress import HEARTBEAT_S, MAX_LINE, Progress, show_as, trial_line
from lorasweep.search.record import ERROR

from .stubs import Scripted, StubRunner

SWEEP = """\
study: {name: lines, metric: f1, sampler: {type: grid, seed: 0}, n_trials: 3,
        pruner: {type: threshold, lower: -0.65}}
search_space:
  lora_r: {type: choice, values: [1, 2, 4]}
"""
LONG_ERROR = "the data went wrong: " + "x" * 400 + "\nTraceback (most recent call last):\n  more"


def _runner() -> StubRunner:
    """r=1 fails with a long, two-line error; r=2 and r=4 finish."""
    return StubRunner(
        lambda r: Scripted(
            curve={step: {"eval_loss": 1 / r, "loss": 2.0 / r} for step in (10, 20)},
            metrics={"eval_loss": 1 / r, "f1": r / 10},
            error=RuntimeError(LONG_ERROR) if r == 1 else None,
        )
    )


def test_lines_mode_prints_one_plain_line_per_finished_trial(stores, write, capsys):
    study = run_sweep(
        load_sweep(write(SWEEP)), RunOptions(progress="lines", plots=False, max_failures=3), runner=_runner()
    )
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b[" not in out
    lines = out.splitlines()
    assert all(len(line) <= MAX_LINE for line in lines), max(lines, key=len)
    finished = [line for line in lines if line.startswith("trial ") and "running" not in line]
    assert len(finished) == len(study.trials) >= 3  # the failed trial's too, on one line
    failed = [line for line in finished if " FAIL " in line]
    assert failed and all(len(line) == MAX_LINE and line.endswith("\u2026") for line in failed)
    assert "error: RuntimeError: the data went wrong: xxx" in failed[0]


def test_quiet_and_none_print_no_trial_lines(stores, write, capsys):
    run_sweep(
        load_sweep(write(SWEEP)), RunOptions(progress="none", plots=False, n_trials=1), runner=_runner()
    )
    assert "trial " not in capsys.readouterr().out


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _finished(study: optuna.Study, number_of_params: int = 1, error: str | None = None):
    distributions = {
        f"knob_{i}": optuna.distributions.FloatDistribution(0.0, 1.0) for i in range(number_of_params)
    }
    trial = optuna.trial.create_trial(
        params={name: 0.123456 for name in distributions},
        distributions=distributions,
        value=None if error else 0.5,
        state=optuna.trial.TrialState.FAIL if error else optuna.trial.TrialState.COMPLETE,
        user_attrs={ERROR: error} if error else {},
    )
    study.add_trial(trial)
    return study.trials[-1]


def test_a_running_trial_has_a_heartbeat_at_most_every_30_seconds(capsys):
    clock = Clock()
    study = optuna.create_study(direction="maximize")
    progress = Progress(("f1",), budget=2, done=0, mode="lines", clock=clock)

    def step_at(seconds: float, number: int, step: int) -> str:
        clock.now = 1000.0 + seconds
        progress.trial_step(number, step, 120, 2.3149)
        return capsys.readouterr().out

    assert step_at(10, 0, 10) == ""
    assert step_at(HEARTBEAT_S - 0.5, 0, 20) == ""
    assert step_at(HEARTBEAT_S, 0, 30) == f"trial 0 running: step 30/120, loss 2.315, {HEARTBEAT_S:.0f} s\n"
    assert step_at(HEARTBEAT_S + 20, 0, 40) == ""  # 20 s after the last line
    assert step_at(2 * HEARTBEAT_S + 1, 0, 50) == "trial 0 running: step 50/120, loss 2.315, 61 s\n"
    clock.now = 1070.0
    progress(study, _finished(study))  # trial 0 ends: its line, and trial 1 starts now
    assert capsys.readouterr().out.startswith("trial   0 COMPLETE f1=0.5")
    assert step_at(70 + HEARTBEAT_S - 1, 1, 10) == ""
    assert (
        step_at(70 + HEARTBEAT_S, 1, 20) == f"trial 1 running: step 20/120, loss 2.315, {HEARTBEAT_S:.0f} s\n"
    )
    progress.close()


def test_a_trial_line_is_one_line_of_at_most_300_characters():
    study = optuna.create_study(direction="maximize")
    line = trial_line(_finished(study, number_of_params=40, error=LONG_ERROR), ("f1",))
    assert "\n" not in line and len(line) == MAX_LINE and line.endswith("\u2026")
    assert line.startswith("trial   0 FAIL     -  knob_0=0.1235 knob_1=0.1235")
    short = trial_line(_finished(study), ("f1",))
    assert len(short) < 80 and not short.endswith("\u2026")  # nothing cut that fits


def test_auto_is_a_bar_on_a_terminal_and_lines_in_a_file(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert show_as("auto", Terminal()) == "bar"
    with open(tmp_path / "log.txt", "w") as log:
        assert show_as("auto", log) == "lines"
    assert show_as("bar", io.StringIO()) == "bar"  # asked for: a bar even into a file
    assert show_as("none") == "none"


def test_the_api_refuses_an_unknown_progress_mode(in_tmp):
    with pytest.raises(
        lorasweep.UserError, match=r"progress must be one of auto, bar, lines, none, but got progress='bars'"
    ):
        lorasweep.run({}, progress="bars")
    assert not (in_tmp / "mlruns").exists()


TINY_SWEEP = """\
study: {name: logged, metric: f1, n_trials: 2}
search_space:
  lora_r: {type: choice, values: [2, 4]}
train: {max_steps: 4, eval_steps: 2}
eval: {max_samples: 4}
"""


@pytest.mark.slow
def test_a_sweep_logged_to_a_file_has_plain_short_lines(tmp_path):
    """`lorasweep run ... > log.txt` with the embedded tiny model: what a CI log or nohup gets."""
    (tmp_path / "sweep.yaml").write_text(TINY_SWEEP, encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with open(tmp_path / "log.txt", "w") as log:
        done = subprocess.run(
            [sys.executable, "-P", "-m", "lorasweep.search", "run", "sweep.yaml", "--no-system-metrics"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.PIPE,
            text=True,
            timeout=900,
        )
    assert done.returncode == 0, done.stderr
    out = (tmp_path / "log.txt").read_text(encoding="utf-8")
    assert "\r" not in out and "\x1b[" not in out
    lines = out.splitlines()
    assert all(len(line) <= MAX_LINE for line in lines), max(lines, key=len)
    finished = [line for line in lines if line.startswith("trial ") and "running" not in line]
    assert len(finished) == 2 and all(" COMPLETE " in line or " PRUNED " in line for line in finished)
    assert any(line.startswith("best: trial ") for line in lines)
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr, done.stderr
