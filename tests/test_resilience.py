"""Sweeps that survive, on stub trial runners (no training): pruning, duplicates, failure limits,
interrupted and dead workers' trials run again."""

from __future__ import annotations

import dataclasses
import socket
import statistics
import subprocess
import time
import warnings

import optuna
import pytest
from mlflow import MlflowClient

from lorasweep.search import RunOptions, load_sweep, run_sweep
from lorasweep.search.cli import main
from lorasweep.search.errors import SweepStopped
from lorasweep.search.storage import open_storage
from lorasweep.search.tracking import Tracker

from .stubs import Scripted, StubRunner

GRID = """\
study: {{name: stub, metric: {metric}, sampler: {{type: grid, seed: {seed}}}, n_trials: 3{extra}}}
search_space:
  lora_r: {{type: choice, values: [2, 4, 8]}}
"""


def curve_runner(fail_with: BaseException | None = None) -> StubRunner:
    """Eval loss 1/r + 1/step: a higher rank is better at every evaluation."""
    return StubRunner(
        lambda r: Scripted(
            curve={step: {"eval_loss": 1 / r + 1 / step, "loss": 1 / r} for step in (10, 20, 30)},
            metrics={"eval_loss": 1 / r, "f1": r / 10},
            error=fail_with,
        ),
        base={"eval_loss": 5.0, "f1": 0.0},
    )


def _ask(study: optuna.Study) -> optuna.Trial:
    """A trial started outside optimize, as a worker that then dies would leave it."""
    with warnings.catch_warnings():  # "Heartbeat of storage is supposed to be used with optimize"
        warnings.simplefilter("ignore", UserWarning)
        return study.ask({"lora_r": optuna.distributions.CategoricalDistribution([2, 4, 8])})


def _client(folder) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")


def _run(folder, trial) -> object:
    return _client(folder).get_run(trial.user_attrs["mlflow_run_id"])


def test_a_pruned_trial_stops_at_once_keeps_its_curve_and_skips_generation(stores, write):
    sweep = load_sweep(
        write(GRID.format(metric="eval_loss", seed=0, extra=", pruner: {type: threshold, upper: 0.4}"))
    )
    runner = curve_runner()
    study = run_sweep(sweep, RunOptions(quiet=True, plots=False), runner=runner)

    by_rank = {t.params["lora_r"]: t for t in study.trials}
    assert {r: t.state.name for r, t in by_rank.items()} == {2: "PRUNED", 4: "COMPLETE", 8: "COMPLETE"}
    assert sorted(runner.finished) == [4, 8]  # rank 2 never reached generation
    pruned = by_rank[2]
    assert pruned.intermediate_values == {10: pytest.approx(0.6)}
    assert pruned.user_attrs["pruned_step"] == 10
    run = _run(stores, pruned)
    assert run.info.status == "FINISHED" and run.data.tags["lorasweep.state"] == "PRUNED"
    assert run.data.tags["lorasweep.pruned_step"] == "10"
    assert [m.step for m in _client(stores).get_metric_history(run.info.run_id, "eval_loss")] == [10]
    assert "f1" not in run.data.metrics
    assert _run(stores, by_rank[8]).data.tags["lorasweep.state"] == "COMPLETE"
    parent = _client(stores).get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.data.metrics["n_pruned"] == 1 and parent.data.metrics["n_complete"] == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_maximised_objective_prunes_the_trials_with_the_worse_loss(stores, write, seed):
    """f1 cannot be computed during training, so eval loss is reported, negated: the pruner must
    stop the high-loss trials, not the low-loss ones."""
    sweep = load_sweep(
        write(GRID.format(metric="f1", seed=seed, extra=", pruner: {type: median, n_startup_trials: 1}"))
    )
    study = run_sweep(sweep, RunOptions(quiet=True, plots=False), runner=curve_runner())

    completed_losses: list[float] = []
    for trial in study.trials:
        loss = 1 / trial.params["lora_r"] + 1 / 10
        if completed_losses:
            assert (trial.state.name == "PRUNED") == (loss > statistics.median(completed_losses)), trial
        if trial.state.name == "COMPLETE":
            completed_losses.append(loss)
        else:
            assert trial.intermediate_values == {10: pytest.approx(-loss)}


def test_a_pruner_is_refused_for_several_objectives(write):
    from lorasweep.search import SweepError

    with pytest.raises(SweepError, match=r"a pruner needs a single-objective study.*pruner='median'"):
        load_sweep(write("study: {metrics: [f1, eval_loss], pruner: median}\n"))


def test_a_configuration_already_evaluated_is_not_trained_again(stores, write):
    """The sampler draws around configurations the study holds (test_continue.py); one that slips
    through (two workers drawing at one instant; here, queued by hand) takes the earlier result."""
    sweep = load_sweep(
        write(
            "study: {name: dup, metric: f1, n_trials: 1}\n"
            "search_space:\n  lora_r: {type: choice, values: [4, 8]}\n"
        )
    )
    runner = curve_runner()
    first = run_sweep(sweep, RunOptions(quiet=True, plots=False), runner=runner).trials[0]
    optuna.load_study(study_name="dup", storage=open_storage(None)).enqueue_trial(first.params)
    study = run_sweep(sweep, RunOptions(n_trials=2, quiet=True, plots=False), runner=runner)

    assert runner.finished == [first.params["lora_r"]]  # trained once
    repeat = study.trials[1]
    assert repeat.params == first.params
    assert repeat.state.name == "COMPLETE" and repeat.value == first.value
    assert repeat.user_attrs["duplicate_of"] == 0
    run = _run(stores, repeat)
    assert run.data.tags["lorasweep.duplicate_of"] == "0"
    assert run.data.tags["lorasweep.duplicate_run_id"] == first.user_attrs["mlflow_run_id"]
    assert run.data.metrics["f1"] == pytest.approx(first.value)


def test_max_failures_stops_a_failing_sweep_with_a_summary(stores, write):
    sweep = load_sweep(write(GRID.format(metric="f1", seed=0, extra="")))
    runner = curve_runner(fail_with=RuntimeError("CUDA out of memory"))
    with pytest.raises(SweepStopped) as stopped:
        run_sweep(sweep, RunOptions(quiet=True, plots=False, max_failures=2), runner=runner)

    message = str(stopped.value)
    assert "2 trials failed in this run (--max-failures 2); 0/3 trials finished" in message
    assert "RuntimeError: CUDA out of memory  (trials 0, 1)" in message
    study = optuna.load_study(study_name="stub", storage=open_storage(None))
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    parent = _client(stores).get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FAILED" and parent.data.metrics["n_fail"] == 2


def test_the_cli_exits_1_with_the_summary_when_trials_keep_failing(stores, write, capsys, monkeypatch):
    monkeypatch.setattr(
        "lorasweep.objectives.Recipe", lambda *a, **k: curve_runner(fail_with=ValueError("r=2 rejected"))
    )
    path = write(GRID.format(metric="f1", seed=0, extra=""))
    assert main(["-q", "run", str(path), "--max-failures", "1"]) == 1
    err = capsys.readouterr().err
    assert "error: the sweep stopped: 1 trials failed" in err and "ValueError: r=2 rejected" in err
    assert "Traceback" not in err


def test_failed_trials_count_against_nothing_but_max_failures(stores, write):
    """A trial that raises is replaced: the study still ends with its budget of finished trials."""
    # Seed 2 draws r=8, then the failing r=2, then 4 and 16 (seed 0 never draws r=2 in 3 trials, and
    # a test that meets no failure proves nothing).
    sweep = load_sweep(
        write(
            "study: {name: flaky, metric: f1, sampler: {type: random, seed: 2}, n_trials: 3}\n"
            "search_space:\n  lora_r: {type: choice, values: [2, 4, 8, 16]}\n"
        )
    )

    def flaky(r: int) -> Scripted:
        scripted = curve_runner().script(r)
        nan = FloatingPointError("loss became nan at step 20")
        return dataclasses.replace(scripted, error=nan) if r == 2 else scripted

    study = run_sweep(sweep, RunOptions(quiet=True, plots=False, max_failures=100), runner=StubRunner(flaky))
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 3 and states[-1] == "COMPLETE"
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert [t.params["lora_r"] for t in failed] == [2], "the seed must draw the failing r=2 (once)"
    assert len(study.trials) == 4  # the failed trial replaced, and r=2, which raised, not drawn again
    for trial in failed:
        assert trial.user_attrs["error"] == "FloatingPointError: loss became nan at step 20"
        assert _run(stores, trial).data.tags["lorasweep.error"].startswith("FloatingPointError")


def test_an_interrupted_trial_runs_again_with_its_params_and_seed(stores, write):
    sweep = load_sweep(write(GRID.format(metric="f1", seed=0, extra="")))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            sweep, RunOptions(quiet=True, plots=False), runner=curve_runner(fail_with=KeyboardInterrupt())
        )
    study = optuna.load_study(study_name="stub", storage=open_storage(None))
    interrupted = study.trials[0]
    assert interrupted.state.name == "FAIL" and interrupted.user_attrs["interrupted"]
    assert _run(stores, interrupted).info.status == "KILLED"

    runner = curve_runner()
    study = run_sweep(sweep, RunOptions(quiet=True, plots=False), runner=runner)
    retry = study.trials[1]
    assert retry.params == interrupted.params and retry.user_attrs["retry_of"] == 0
    assert retry.system_attrs["retry_history"] == [0] and retry.state.name == "COMPLETE"
    assert runner.seeds[0] == interrupted.user_attrs["seed"]  # trains exactly as the original would
    assert _run(stores, retry).data.tags["lorasweep.retry_of"] == "0"
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3


def test_retries_zero_never_reruns(stores, write):
    sweep = load_sweep(write(GRID.format(metric="f1", seed=0, extra=", retries: 0")))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            sweep, RunOptions(quiet=True, plots=False), runner=curve_runner(fail_with=KeyboardInterrupt())
        )
    study = run_sweep(sweep, RunOptions(quiet=True, plots=False), runner=curve_runner())
    assert not any("retry_of" in t.user_attrs for t in study.trials)


@pytest.mark.parametrize("storage", [None, "sqlite:///optuna.db"], ids=["journal", "database"])
def test_a_dead_workers_trial_is_failed_its_run_killed_and_retried(stores, write, storage):
    """In process, with a trial left RUNNING by a process that has exited (the SIGKILL test in
    test_kill.py does it for real)."""
    sweep = load_sweep(write(GRID.format(metric="f1", seed=0, extra="")))
    run_sweep(sweep, RunOptions(quiet=True, plots=False, n_trials=1, storage=storage), runner=curve_runner())
    study = optuna.load_study(study_name="stub", storage=open_storage(storage))
    orphan = _ask(study)
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}:0")
    tracker = Tracker("sqlite:///mlruns/mlflow.db", "stub")
    run_id = tracker.start_trial(study.user_attrs["mlflow_parent_run_id"], "stub", orphan.number, {}, [])
    orphan.set_user_attr("mlflow_run_id", run_id)

    study = run_sweep(
        sweep, RunOptions(quiet=True, plots=False, n_trials=3, storage=storage), runner=curve_runner()
    )
    states = {t.number: t.state.name for t in study.trials}
    assert states[orphan.number] == "FAIL"
    assert study.trials[orphan.number].user_attrs["error"] == "worker died mid-trial"
    killed = _client(stores).get_run(run_id)
    assert killed.info.status == "KILLED" and killed.data.tags["lorasweep.state"] == "FAIL"
    retry = study.trials[orphan.number + 1]
    assert retry.user_attrs["retry_of"] == orphan.number and retry.params == orphan.params
    assert list(states.values()).count("COMPLETE") == 3


def test_on_a_database_storage_the_heartbeat_fails_another_machines_dead_trial(stores, write, monkeypatch):
    """A worker on another machine cannot be checked by pid: its trial goes stale when its heartbeat
    stops, and is then failed, its run closed and the trial retried, from this worker."""
    monkeypatch.setattr("lorasweep.search.storage.HEARTBEAT_S", 1)
    monkeypatch.setattr("lorasweep.search.storage.GRACE_S", 2)
    sweep = load_sweep(write(GRID.format(metric="f1", seed=0, extra="")))
    options = RunOptions(quiet=True, plots=False, n_trials=1, storage="sqlite:///optuna.db")
    run_sweep(sweep, options, runner=curve_runner())
    storage = open_storage(options.storage)
    study = optuna.load_study(study_name="stub", storage=storage)
    orphan = _ask(study)
    orphan.set_user_attr("worker", "another-machine:4242:0")
    tracker = Tracker("sqlite:///mlruns/mlflow.db", "stub")
    run_id = tracker.start_trial(study.user_attrs["mlflow_parent_run_id"], "stub", orphan.number, {}, [])
    orphan.set_user_attr("mlflow_run_id", run_id)
    storage.record_heartbeat(orphan._trial_id)  # its last sign of life
    time.sleep(3)

    study = run_sweep(sweep, dataclasses.replace(options, n_trials=3), runner=curve_runner())
    assert study.trials[orphan.number].state.name == "FAIL"
    assert _client(stores).get_run(run_id).info.status == "KILLED"
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == orphan.number]
    assert len(retries) == 1 and retries[0].params == orphan.params


def test_a_met_budget_still_closes_a_dead_workers_trial(stores, write):
    sweep = load_sweep(write(GRID.format(metric="f1", seed=0, extra="")))
    run_sweep(sweep, RunOptions(quiet=True, plots=False, n_trials=1), runner=curve_runner())
    study = optuna.load_study(study_name="stub", storage=open_storage(None))
    orphan = _ask(study)
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}:0")

    run_sweep(sweep, RunOptions(quiet=True, plots=False, n_trials=1), runner=curve_runner())
    study = optuna.load_study(study_name="stub", storage=open_storage(None))
    assert study.trials[orphan.number].state.name == "FAIL"
    assert len(study.trials) == 2  # and nothing was retried: the budget is met


def test_three_quick_interrupts_still_close_the_trial_its_runs_and_its_scratch_folder(
    stores, write, monkeypatch, tmp_path
):
    """Ctrl-C three times: the first stops the trial; the others land while it closes (its scratch
    folder's removal, its MLflow run, the parent run) and must not cut that short."""
    import os
    import signal
    import tempfile

    def interrupt() -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler before the next line

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    trained: list[int] = []
    closing = ((tempfile.TemporaryDirectory, "cleanup"), (Tracker, "fail_trial"), (Tracker, "fail_study"))
    for cls, name in closing:
        original = getattr(cls, name)

        def interrupted_first(*args, _original=original, **kwargs):
            if trained:  # once the first Ctrl-C has stopped the trial
                interrupt()
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, name, interrupted_first)
    runner = curve_runner()
    runner.script = lambda r: trained.append(r) or interrupt()

    sweep = load_sweep(write(GRID.format(metric="f1", seed=0, extra="")))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, RunOptions(quiet=True, plots=False), runner=runner)

    study = optuna.load_study(study_name="stub", storage=open_storage(None))
    stopped = study.trials[0]
    assert stopped.state.name == "FAIL" and stopped.user_attrs["interrupted"]
    run = _run(stores, stopped)
    assert run.info.status == "KILLED" and run.data.tags["lorasweep.state"] == "FAIL"
    assert _client(stores).get_run(study.user_attrs["mlflow_parent_run_id"]).info.status == "KILLED"
    assert list(scratch.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back


def test_a_ctrl_c_swallowed_by_a_finalizer_still_stops_the_sweep(stores, write):
    """A KeyboardInterrupt raised inside a __del__ is swallowed by Python ("Exception ignored in");
    the sweep sends the signal again and stops, rather than run on to the end as if never asked."""
    import os
    import signal

    class InterruptedWhileCollected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, inside the finalizer

    def script(r: int):
        collected = InterruptedWhileCollected()
        del collected  # the interrupt is raised and swallowed here
        time.sleep(2.0)  # where the signal, sent again, stops the trial
        return curve_runner().script(r)

    runner = curve_runner()
    runner.script = script

    sweep = load_sweep(write(GRID.format(metric="f1", seed=0, extra="")))
    with pytest.raises(KeyboardInterrupt, match="SIGINT"):
        run_sweep(sweep, RunOptions(quiet=True, plots=False), runner=runner)

    stopped = optuna.load_study(study_name="stub", storage=open_storage(None)).trials
    assert len(stopped) == 1 and stopped[0].user_attrs["interrupted"]
    assert _run(stores, stopped[0]).data.tags["lorasweep.error"].startswith("Interrupted: SIGINT")
