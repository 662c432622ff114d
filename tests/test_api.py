"""`import lorasweep`: the CLI's operations from Python, its errors as exceptions, custom metrics."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from mlflow import MlflowClient

import lorasweep
from lorasweep.search import RunOptions, load_sweep, run_sweep
from lorasweep.search.cli import main

from .conftest import ROOT
from .test_compare import SWEEP, scored_runner


def _readme_example() -> str:
    section = (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")  # the manual's "From Python"
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readmes_python_example_runs_as_printed_with_its_own_metric(stores, capsys):
    exec(compile(_readme_example(), "docs/python-api.md", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    study = lorasweep.search.load_study("notebook", None)
    assert study.metric_names == ["tone_hit"] and len(study.trials) == 3
    chosen = lorasweep.best(study)
    assert f"trial {chosen.number}: tone_hit={chosen.metrics['tone_hit']:.2f}" in out
    hits = [t.user_attrs["metrics"]["tone_hit"] for t in study.trials if t.state.name == "COMPLETE"]
    assert hits and all(0.0 <= h <= 1.0 for h in hits)
    assert max(hits) == study.best_value == chosen.metrics["tone_hit"]  # it is the objective
    table = lorasweep.trials(study)
    assert list(table.index) == [0, 1, 2] and table["tone_hit"].max() == max(hits)
    run = MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db").get_run(chosen.run_id)
    assert run.data.metrics["tone_hit"] == chosen.metrics["tone_hit"]  # logged beside f1 and ROUGE
    assert {"f1", "rougeL"} <= set(run.data.metrics)
    base = study.user_attrs["base_metrics"]
    assert 0.0 <= base["tone_hit"] <= 1.0  # the base model is scored with it too


def test_errors_are_raised_with_the_clis_messages_and_nothing_is_written(in_tmp, capsys):
    broken = {"study": {"name": "bad", "metric": "f2"}, "search_space": {"lora_r": {"type": "choice"}}}
    with pytest.raises(lorasweep.SweepError) as raised:
        lorasweep.run(broken)
    assert "a study metric must be one of" in str(raised.value) and "f2" in str(raised.value)
    assert not (in_tmp / "mlruns").exists()
    with pytest.raises(lorasweep.UserError, match="must be a positive integer, but got trials=0"):
        lorasweep.run({}, trials=0)
    with pytest.raises(lorasweep.UserError, match="the study storage must exist"):
        lorasweep.trials(storage=str(in_tmp / "none.journal"))
    assert main(["run", "missing.yaml"]) == 2  # the CLI prints what the API raises
    assert "missing.yaml" in capsys.readouterr().err


def test_a_custom_metric_needs_a_direction_its_function_and_this_process(stores, write):
    rule = r"a custom metric must come with its direction.*metric 'hit'.*Add directions"
    with pytest.raises(lorasweep.SweepError, match=rule):
        lorasweep.run({"study": {"metric": "hit"}}, metrics={"hit": len})
    with pytest.raises(lorasweep.UserError, match=r"metric must not take a built-in metric's name.*\['f1'\]"):
        lorasweep.run({}, metrics={"f1": len})
    only_here = lambda outputs, references: 0.0  # noqa: E731 - no other process can import it
    with pytest.raises(lorasweep.UserError, match=r"got workers=2 with metrics.*a lambda has no name"):
        lorasweep.run({"study": {"storage": "mlruns/x.journal"}}, workers=2, metrics={"hit": only_here})

    # A study that records a custom metric no other process can import cannot be continued without it.
    sweep = load_sweep(write(SWEEP), custom_metrics=("hit",))
    run_sweep(sweep, RunOptions(quiet=True, plots=False, metrics={"hit": only_here}), runner=scored_runner())
    with pytest.raises(
        lorasweep.UserError, match=r"records hit, computed by Python functions.*lorasweep.resume"
    ):
        lorasweep.resume("cmp", trials=9)
    assert main(["resume", "cmp", "--trials", "9"]) == 2  # the CLI cannot pass a function


def test_trials_best_and_studies_read_a_finished_study(stores, write):
    run_sweep(load_sweep(write(SWEEP)), RunOptions(quiet=True, plots=False), runner=scored_runner())
    table = lorasweep.trials("cmp", sort="f1")
    assert table.index.name == "number" and table.iloc[0]["state"] == "COMPLETE"
    assert list(table["f1"].dropna()) == sorted(table["f1"].dropna(), reverse=True)  # best f1 first
    assert {"param.lora_r", "mlflow_run_id", "note", "duration_s"} <= set(table.columns)
    chosen = lorasweep.best("cmp")
    assert chosen.number == table.index[0] and chosen.adapter_uri == f"runs:/{chosen.run_id}/adapter"
    listed = lorasweep.studies()
    assert list(listed["name"]) == ["cmp"] and listed.loc[0, "finished"] == len(table)


def test_report_returns_its_html_page_and_leaves_the_callers_logging_as_it_was(stores, write):
    import optuna

    study = run_sweep(load_sweep(write(SWEEP)), RunOptions(quiet=True, plots=False), runner=scored_runner())
    before = optuna.logging.get_verbosity()
    filters, bars = list(warnings.filters), os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    optuna.logging.set_verbosity(optuna.logging.INFO)  # a notebook that wants Optuna's INFO lines
    try:
        page = lorasweep.report(study)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
        assert [f for f in warnings.filters if f not in filters] == []
        assert [f for f in filters if f not in warnings.filters] == []
        assert os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR") == bars
    finally:
        optuna.logging.set_verbosity(before)
    assert page == Path("reports") / "cmp" / "report.html" and page.is_file()
    assert (page.parent / "history.png").is_file() and "Optimization history" in page.read_text("utf-8")


def test_libraries_are_quiet_for_the_call_only():
    """What a sweep or an export silences in the trial side's libraries comes back as it was."""
    import datasets
    import transformers.utils.logging as transformers_logging

    from lorasweep.objectives import libraries_quieted

    was = (transformers_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled())
    transformers_logging.enable_progress_bar()  # a caller's own choice (a notebook's default)
    # (datasets keeps its bars off if $HF_DATASETS_DISABLE_PROGRESS_BARS was set when it loaded, as
    # an in-process CLI test of this session does: then the caller's state is that.)
    datasets.enable_progress_bars()
    callers = (transformers_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled())
    verbosity = transformers_logging.get_verbosity()
    try:
        with libraries_quieted():
            assert not transformers_logging.is_progress_bar_enabled()
            assert not datasets.is_progress_bar_enabled()
            assert transformers_logging.get_verbosity() == transformers_logging.ERROR
        assert callers[0]
        assert (transformers_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()) == callers
        assert transformers_logging.get_verbosity() == verbosity
    finally:
        if not was[0]:
            transformers_logging.disable_progress_bar()
        if not was[1]:
            datasets.disable_progress_bars()


def test_import_lorasweep_loads_no_library():
    done = subprocess.run(
        [
            sys.executable,
            "-P",
            "-c",
            "import sys, lorasweep; lorasweep.run; print(sorted(m for m in "
            "('torch', 'optuna', 'mlflow', 'transformers') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"  # the names load their modules when first called
