"""Metrics of the user's own named by import path: `eval.metrics` in the sweep file (a module beside
it, or an installed one), checked by `validate`, recorded on the study and its runs, and imported
again by every process that runs trials (`--workers N`, `lorasweep worker`, `resume`); and the
Python API's module-level functions handed on by their path."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

import lorasweep
from lorasweep.objectives import InputError, MetricSource, importable_source, load_metric
from lorasweep.search import RunOptions, load_sweep, run_sweep
from lorasweep.search.cli import main
from lorasweep.search.launch import metric_sources
from lorasweep.search.record import StudyRecord
from lorasweep.search.sweepfile import stored_sweep

from .fixtures.metric_functions import first_word_hit
from .stubs import Scripted, StubRunner

MODULE = """\
def hit(outputs, references):
    return sum(o.split(",")[0] == r.split(",")[0] for o, r in zip(outputs, references)) / len(outputs)


NOT_A_FUNCTION = 3


def one_argument(outputs):
    return 0.0
"""
SWEEP = """\
study: {name: paths, metric: hit, sampler: {type: grid, seed: 0}, n_trials: 2}
eval:
  metrics:
    hit: {path: "sweep_metrics:hit", direction: maximize}
search_space:
  lora_r: {type: choice, values: [2, 4]}
"""


def _beside(folder: Path, module: str = "sweep_metrics", text: str = MODULE) -> None:
    (folder / f"{module}.py").write_text(text, encoding="utf-8")


def test_a_metric_named_by_path_is_a_study_metric_with_its_direction(write, tmp_path):
    _beside(tmp_path)
    sweep = load_sweep(write(SWEEP))
    assert sweep.custom_metrics == ("hit",) and sweep.study.directions == ("maximize",)
    assert sweep.eval.metric_paths() == {"hit": "sweep_metrics:hit"}
    assert str(tmp_path) not in sys.path  # the module came from the folder; the folder did not stay


def test_validate_refuses_each_path_that_cannot_score_at_its_line(write, tmp_path, capsys):
    _beside(tmp_path)
    _beside(tmp_path, "raises", "raise RuntimeError('no licence server')\n")
    path = write(
        "eval:\n"
        "  metrics:\n"
        '    a: "no_such_module:f"\n'
        '    b: "sweep_metrics:hti"\n'
        '    c: "sweep_metrics:NOT_A_FUNCTION"\n'
        '    d: "sweep_metrics:one_argument"\n'
        '    e: "raises:f"\n'
        '    f: "no colon"\n'
        '    bleu: "sweep_metrics:hit"\n'
    )
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    expected = [
        (3, "eval.metrics.a must name a module found beside the sweep file or installed, but got "
            "path='no_such_module:f': no module 'no_such_module' in"),
        (3, f"Put no_such_module.py in {tmp_path}, or pip install the package that holds it."),
        (4, "eval.metrics.b must name a function of module sweep_metrics, but got path='sweep_metrics:hti': "
            "sweep_metrics has no attribute 'hti'. Did you mean 'hit'?"),
        (5, "eval.metrics.c must name a function, but got path='sweep_metrics:NOT_A_FUNCTION', which is 3"),
        (6, "eval.metrics.d must take two arguments, the generations and their references (two lists of "
            "strings), but got path='sweep_metrics:one_argument' with signature (outputs). Define it as "
            "def one_argument(outputs, references) -> float."),
        (7, "eval.metrics.e must name a module that imports, but got path='raises:f', whose import raised "
            "RuntimeError: no licence server."),
        (8, "eval.metrics.f must be module:function, but got path='no colon'."),
        (9, "a custom metric must not take a built-in metric's name, but got metrics=['bleu']"),
    ]  # fmt: skip
    lines = err.splitlines()
    for line, text in expected:
        assert any(f"{path}:{line}: " in got and text in got for got in lines), (line, text, err)


def test_a_module_beside_the_sweep_file_replaces_no_module_another_import_took(tmp_path):
    (tmp_path / "json.py").write_text("def f(outputs, references):\n    return 0.0\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"whose name no other module took, but got 'json'.*Rename json"):
        load_metric("m", "json:f", tmp_path)
    import json

    assert hasattr(json, "dumps")  # the standard library's json is untouched


def test_two_folders_may_each_hold_a_module_of_the_same_name(tmp_path):
    for value in (1.0, 2.0):
        folder = tmp_path / str(value)
        folder.mkdir()
        _beside(folder, "same_name", f"def score(outputs, references):\n    return {value}\n")
        assert load_metric("m", "same_name:score", folder)([], []) == value


def test_a_package_beside_the_sweep_file_imports_its_neighbours_as_python_would(tmp_path):
    (tmp_path / "pkg_neighbours").mkdir()
    (tmp_path / "pkg_neighbours" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "pkg_neighbours" / "scoring.py").write_text(
        "import neighbour_helper\n\ndef score(outputs, references):\n    return neighbour_helper.VALUE\n",
        encoding="utf-8",
    )
    (tmp_path / "neighbour_helper.py").write_text("VALUE = 0.5\n", encoding="utf-8")
    assert load_metric("m", "pkg_neighbours.scoring:score", tmp_path)([], []) == 0.5
    assert str(tmp_path) not in sys.path  # the folder is on the path only while the modules load


def test_a_worker_whose_folder_is_missing_imports_from_the_installed_packages_or_says_what_to_do(tmp_path):
    gone = str(tmp_path / "on-another-machine")
    found = MetricSource("tests.fixtures.metric_functions:first_word_hit", gone).load("hit", None)
    assert found is first_word_hit  # installed (here: importable from the test run's path)
    with pytest.raises(InputError) as raised:
        MetricSource("team_metrics:hit", gone).load("hit", None)
    message = str(raised.value)
    assert message.startswith("the custom metric 'hit' must name a module found beside the sweep file")
    assert (
        f"({gone} does not exist on this machine). Put team_metrics.py in {gone}, or pip install" in message
    )


def test_the_api_hands_on_a_module_level_function_by_its_path_and_keeps_the_rest_here():
    source = importable_source(first_word_hit)
    assert source is not None and source.path == "tests.fixtures.metric_functions:first_word_hit"
    assert Path(source.folder, "tests", "fixtures", "metric_functions.py").is_file()
    assert source.load("hit", None, check_signature=False) is first_word_hit

    def closure(outputs, references):
        return 0.0

    assert importable_source(lambda o, r: 0.0) is None
    assert importable_source(closure) is None
    in_main = type(first_word_hit)(first_word_hit.__code__, {}, "hit")
    in_main.__module__ = "__main__"
    assert importable_source(in_main) is None


def test_the_study_and_its_runs_record_the_paths_and_a_resume_needs_no_functions(stores, write, tmp_path):
    """With a stub runner (no model): what run records, and what a later process reads back."""
    _beside(tmp_path)
    sweep = load_sweep(write(SWEEP), custom_metrics=("api_hit",))
    runner = StubRunner(lambda r: Scripted(metrics={"eval_loss": 1 / r, "hit": r / 10, "api_hit": 0.5}))
    options = RunOptions(quiet=True, plots=False, metrics={"api_hit": first_word_hit})
    study = run_sweep(sweep, options, runner=runner)

    kept = StudyRecord.of(study)
    assert kept.metric_paths["hit"] == ("sweep_metrics:hit", None)  # None: beside the sweep file
    assert kept.metric_paths["api_hit"][0] == "tests.fixtures.metric_functions:first_word_hit"
    client = MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db")
    for run_id in (kept.parent_run_id, study.trials[0].user_attrs["mlflow_run_id"]):
        params = client.get_run(run_id).data.params
        assert params["eval.metrics.hit"] == "sweep_metrics:hit"
        assert params["eval.metrics.api_hit"] == "tests.fixtures.metric_functions:first_word_hit"

    # A worker or a resume: the stored sweep and record, no functions passed.
    stored = stored_sweep(study)
    again, sources = metric_sources(stored, RunOptions(), StudyRecord.of(study))
    assert set(again.custom_metrics) == {"hit", "api_hit"}
    assert sources["api_hit"].load("api_hit", None, check_signature=False) is first_word_hit
    assert sources["hit"].load("hit", tmp_path)(["a, b"], ["a, c"]) == 1.0


@pytest.mark.slow
def test_every_worker_scores_the_metrics_by_path_and_a_resume_scores_them_again(stores, write, tmp_path):
    """`workers=2`: a metric named in the sweep file (a module beside it) and the API's module-level
    function are scored on every trial, in the workers' processes; the resume passes nothing."""
    _beside(tmp_path)
    path = write(
        "study: {name: paths, metric: hit, sampler: {type: grid, seed: 0}, n_trials: 2}\n"
        "data: {train_split: 'train[:64]'}\n"
        "train: {max_steps: 4, logging_steps: 2, eval_steps: 2, per_device_train_batch_size: 8}\n"
        "eval: {max_samples: 4, max_new_tokens: 4,\n"
        "       metrics: {hit: {path: 'sweep_metrics:hit', direction: maximize}}}\n"
        "search_space:\n"
        "  lora_r: {type: choice, values: [2, 4, 8]}\n"
    )
    study = lorasweep.run(path, workers=2, quiet=True, metrics={"api_hit": first_word_hit})
    study = lorasweep.resume("paths", trials=3, workers=1, quiet=True)

    client = MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    workers = {t.user_attrs["worker"] for t in complete}
    assert len(workers) == 3  # two pool workers, then the resume's own process
    for trial in complete:
        scored = trial.user_attrs["metrics"]
        assert 0.0 <= scored["hit"] <= 1.0 and 0.0 <= scored["api_hit"] <= 1.0
        assert trial.value == scored["hit"]  # the objective
        logged = client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
        assert logged["hit"] == scored["hit"] and logged["api_hit"] == scored["api_hit"]
