"""run_sweep with stub trial runners: failing trials, resume checks, quiet output. No training."""

from __future__ import annotations

import re

import optuna
import pytest
from mlflow import MlflowClient

from lorasweep.search import RunOptions, UserError, load_sweep, run_sweep
from lorasweep.search.cli import main
from lorasweep.search.storage import open_storage

from .stubs import Scripted, StubRunner

SWEEP = """\
study: {name: stub, metric: f1, sampler: {type: grid}, n_trials: 3}
search_space:
  lora_r: {type: choice, values: [2, 4, 8]}
"""


def rank_runner() -> StubRunner:
    """Scores a trial by its rank; rank 4 is 'rejected by the model', as peft might."""
    return StubRunner(
        lambda r: Scripted(
            curve={5: {"eval_loss": 1.0 / r}},
            metrics={"f1": r / 10, "eval_loss": 1.0 / r},
            error=ValueError("rank 4 rejected") if r == 4 else None,
        ),
        base={"f1": 0.1, "eval_loss": 3.0},
    )


def _client(folder) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")


def test_a_failing_trial_fails_alone_with_its_reason(stores, write):
    sweep = load_sweep(write(SWEEP))
    runner = rank_runner()
    study = run_sweep(sweep, RunOptions(quiet=True, plots=False), runner=runner)

    states = {t.params["lora_r"]: t for t in study.trials}
    assert {r: t.state.name for r, t in states.items()} == {2: "COMPLETE", 4: "FAIL", 8: "COMPLETE"}
    assert states[4].user_attrs["error"] == "ValueError: rank 4 rejected"
    failed = _client(stores).get_run(states[4].user_attrs["mlflow_run_id"])
    assert (
        failed.info.status == "FAILED"
        and failed.data.tags["lorasweep.error"] == "ValueError: rank 4 rejected"
    )
    assert "error.txt" in {a.path for a in _client(stores).list_artifacts(failed.info.run_id)}
    best = _client(stores).get_run(states[8].user_attrs["mlflow_run_id"])
    assert best.info.status == "FINISHED" and best.data.metrics["f1"] == pytest.approx(0.8)
    assert [c.seed for c in runner.calls] == [0, 1, 2]  # seed + trial number, recorded per trial
    parent = _client(stores).get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.data.metrics["best_f1"] == pytest.approx(0.8) and parent.data.metrics["n_fail"] == 1


def test_resume_refuses_a_changed_objective(stores, write):
    run_sweep(load_sweep(write(SWEEP)), RunOptions(quiet=True, plots=False), runner=rank_runner())
    changed = load_sweep(write(SWEEP.replace("metric: f1", "metric: eval_loss")))
    with pytest.raises(UserError, match=r"resumed study must keep its objective.*--study"):
        run_sweep(changed, RunOptions(n_trials=5, quiet=True, plots=False), runner=rank_runner())


def test_quiet_prints_nothing_and_loud_prints_a_line_per_trial(stores, write, capsys):
    sweep = load_sweep(write(SWEEP))
    run_sweep(sweep, RunOptions(n_trials=1, quiet=True, plots=False), runner=rank_runner())
    assert capsys.readouterr().out == ""
    run_sweep(sweep, RunOptions(n_trials=2, plots=False), runner=rank_runner())
    out = capsys.readouterr().out
    assert "trial   1 COMPLETE" in out or "trial   1 FAIL" in out


def test_bad_data_exits_2_before_anything_is_written(in_tmp, write, capsys):
    (in_tmp / "rows.jsonl").write_text('{"question": "hi", "answer": "yo"}\n' * 10, encoding="utf-8")
    path = write("data: {path: rows.jsonl, prompt_template: '{text}', response_template: ' {answer}'}\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "field {text}; the columns are question, answer" in err and "Traceback" not in err
    assert not (in_tmp / "mlruns").exists()


def test_duplicate_keys_and_wrong_types_are_refused(write):
    from lorasweep.search import SweepError

    with pytest.raises(SweepError, match=r"sweep.yaml:3: each key must appear once.*first on line 2"):
        load_sweep(write("train:\n  max_steps: 3\n  max_steps: 4\n"))
    with pytest.raises(SweepError, match="parameter max_steps must be an integer, but got max_steps='abc'"):
        load_sweep(write("train: {max_steps: abc}\n"))
    with pytest.raises(SweepError, match=re.escape("parameter r must be an integer, but got r=1.5")):
        load_sweep(write("search_space:\n  lora_r: {type: float, low: 1.5, high: 8}\n"))


def test_storage_holds_one_study_per_name(stores, write):
    sweep = load_sweep(write(SWEEP))
    run_sweep(sweep, RunOptions(n_trials=1, quiet=True, plots=False), runner=rank_runner())
    run_sweep(sweep, RunOptions(n_trials=2, quiet=True, plots=False), runner=rank_runner())
    assert optuna.get_all_study_names(open_storage(None)) == ["stub"]
    runs = _client(stores).search_runs([_client(stores).get_experiment_by_name("stub").experiment_id])
    assert sum(r.data.tags.get("lorasweep.role") == "study" for r in runs) == 1


def test_a_running_trial_shows_its_step_and_loss_beside_the_study_bar(stores, write, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the bar's width: the postfix is cut to fit
    options = RunOptions(n_trials=1, plots=False, progress="bar")  # pytest's stdout is no terminal
    study = run_sweep(load_sweep(write(SWEEP)), options, runner=rank_runner())
    r = study.trials[0].params["lora_r"]  # it reports eval_loss 1/r at step 5, of the default 120 steps
    assert f"trial 0: step 5/120, loss {1 / r:.4g}" in capsys.readouterr().err
