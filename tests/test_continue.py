"""A study continued (a raised budget, a resume, a joined worker, a second run at once) samples new
configurations, not its own past; a seeded sweep still samples the same trials however it is run.
Stub trial runners: nothing trains."""

from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient

from lorasweep.search import RunOptions, load_sweep, run_sweep
from lorasweep.search.errors import UserError
from lorasweep.search.storage import open_storage
from lorasweep.search.strategy import make_sampler

from .test_resilience import curve_runner

SPACE = """\
study: {{name: {name}, metric: f1, sampler: {{type: {kind}, seed: 0}}, n_trials: 3}}
search_space:
  lora_r: {{type: choice, values: [{ranks}]}}
{extra}"""
LR = "  learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}\n"


def _sweep(write, kind="random", name="cont", ranks="2, 4, 8, 16", extra=LR):
    return load_sweep(write(SPACE.format(name=name, kind=kind, ranks=ranks, extra=extra)))


def _configurations(study: optuna.Study) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in study.trials]


@pytest.mark.parametrize("kind", ["random", "tpe"])
def test_a_raised_budget_trains_configurations_the_study_has_not_tried(stores, write, kind):
    sweep = _sweep(write, kind)
    runner = curve_runner()
    for budget in (3, 6, 9):  # each run builds its sampler afresh, as a new process does
        study = run_sweep(sweep, RunOptions(n_trials=budget, quiet=True, plots=False), runner=runner)

    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 9
    assert not [t.number for t in study.trials if "duplicate_of" in t.user_attrs]
    assert len(set(_configurations(study))) == 9
    assert len(runner.calls) == 9  # every trial trained, none reused an earlier result


def test_a_seeded_sweep_samples_the_same_trials_at_once_or_continued(stores, write):
    """Two fresh stores: one study run to 6 trials at once, one run to 3, then continued to 6."""
    sweep = _sweep(write)
    at_once = run_sweep(
        sweep,
        RunOptions(n_trials=6, storage="a.journal", study_name="a", quiet=True, plots=False),
        runner=curve_runner(),
    )
    for budget in (3, 6):
        continued = run_sweep(
            sweep,
            RunOptions(n_trials=budget, storage="b.journal", study_name="b", quiet=True, plots=False),
            runner=curve_runner(),
        )
    assert _configurations(continued) == _configurations(at_once)
    assert len(set(_configurations(at_once))) == 6


def test_an_exhausted_space_says_so_once_and_stops_cleanly(stores, write, capsys):
    sweep = _sweep(write, ranks="2, 4, 8", extra="")
    run_sweep(sweep, RunOptions(quiet=True, plots=False), runner=curve_runner())
    runner = curve_runner()
    study = run_sweep(sweep, RunOptions(n_trials=5, plots=False), runner=runner)

    assert runner.calls == [] and len(study.trials) == 3
    assert sorted(t.params["lora_r"] for t in study.trials) == [2, 4, 8]
    said = [line for line in capsys.readouterr().out.splitlines() if "exhausted" in line]
    assert said == [
        (
            "the search space is exhausted: each of its 3 configurations has run or is running; "
            "stopping at 3/5 finished trials"
        )
    ]
    parent = MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db").get_run(
        study.user_attrs["mlflow_parent_run_id"]
    )
    assert parent.info.status == "FINISHED"


@pytest.mark.parametrize("seed", range(8))
def test_a_new_trial_avoids_the_configurations_of_finished_and_running_trials(write, seed):
    """What a second `lorasweep run` or a joined worker meets: other trials of the study hold
    configurations, one of them still running. Its sampler, made afresh, must draw around them."""
    text = SPACE.format(name="cont", kind="random", ranks="2, 4, 8", extra="")
    sweep = load_sweep(write(text.replace("seed: 0", f"seed: {seed}")))
    study = optuna.create_study(sampler=make_sampler(sweep.study, sweep.space))
    dist = sweep.space.distributions["lora_r"]
    study.add_trial(optuna.trial.create_trial(params={"lora_r": 2}, distributions={"lora_r": dist}, value=1))
    study.enqueue_trial({"lora_r": 4})
    running = study.ask()
    assert sweep.space.sample(running) == {"lora_r": 4}  # and it runs on

    study.sampler = make_sampler(sweep.study, sweep.space)  # another process's
    assert sweep.space.sample(study.ask()) == {"lora_r": 8}


def test_a_changed_search_space_is_refused_before_any_trial_naming_each_change(stores, write):
    """Optuna would fail each new trial at once ("Cannot set different distribution kind"); a
    changed range it would take, mixing two spaces in one study. Both are refused, nothing written."""
    run_sweep(_sweep(write), RunOptions(quiet=True, plots=False), runner=curve_runner())
    storage = open_storage(None)
    stored = optuna.load_study(study_name="cont", storage=storage)
    before = [(t.number, t.state, dict(t.user_attrs)) for t in stored.trials]
    attrs = dict(stored.user_attrs)
    edited = (
        "  lora_r: {type: int, low: 2, high: 16}\n"
        "  learning_rate: {type: float, low: 1e-4, high: 1e-1, log: true}\n"
    )
    changed = load_sweep(write(f"study: {{name: cont, metric: f1, n_trials: 3}}\nsearch_space:\n{edited}"))
    runner = curve_runner()
    with pytest.raises(UserError) as raised:
        run_sweep(changed, RunOptions(n_trials=5, quiet=True, plots=False), runner=runner)

    assert str(raised.value) == (
        "a continued study must keep its search space, but study 'cont' has trials sampled from other "
        "ranges: lora_r: one of 2, 4, 8, 16 -> int [2, 16]; learning_rate: float [0.0001, 0.01] log -> "
        "float [0.0001, 0.1] log. Run the new space as a new study (--study cont-2), or put the old "
        "ranges back in the sweep file to continue this one."
    )
    study = optuna.load_study(study_name="cont", storage=open_storage(None))
    assert [(t.number, t.state, dict(t.user_attrs)) for t in study.trials] == before
    assert dict(study.user_attrs) == attrs and runner.calls == []


def test_the_same_space_in_an_edited_file_continues_with_a_note(stores, write, capsys):
    run_sweep(_sweep(write), RunOptions(quiet=True, plots=False), runner=curve_runner())
    text = SPACE.format(name="cont", kind="random", ranks="2, 4, 8, 16", extra=LR) + "# edited\n"
    study = run_sweep(load_sweep(write(text)), RunOptions(n_trials=4, plots=False), runner=curve_runner())
    assert len(study.trials) == 4
    assert "was started from a different sweep file; continuing" in capsys.readouterr().out


def test_a_study_stopped_before_its_first_trial_takes_an_edited_space(stores, write):
    """Ctrl-C while the base model is evaluated: the study is saved, no trial sampled anything, so
    the edited space mixes nothing and is the study's from then on."""
    runner = curve_runner()

    def interrupted() -> dict[str, float]:
        raise KeyboardInterrupt

    runner.evaluate_base = interrupted
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_sweep(write), RunOptions(quiet=True, plots=False), runner=runner)
    assert optuna.load_study(study_name="cont", storage=open_storage(None)).trials == []

    edited = _sweep(write, ranks="4, 8, 32", extra="")
    study = run_sweep(edited, RunOptions(quiet=True, plots=False), runner=curve_runner())
    assert sorted(t.params["lora_r"] for t in study.trials) == [4, 8, 32]


@pytest.mark.parametrize(
    ("before", "after", "said"),
    [
        ("{per_rank: 2}", "{per_rank: 4}", "lora_alpha: 2 x r -> 4 x r"),
        (
            "{per_rank: 2}",
            "{per_rank: {type: choice, values: [1, 2]}}",
            "lora_alpha: 2 x r -> a sampled per_rank x r",
        ),
        ("{per_rank: 2}", "{type: int, low: 8, high: 32}", "lora_alpha: 2 x r -> not tied to r"),
    ],
)
def test_a_changed_alpha_per_rank_is_refused(stores, write, before, after, said):
    """A fixed k in lora_alpha = k x r is no distribution: the trials' own cannot show its change."""
    quiet = RunOptions(quiet=True, plots=False)
    run_sweep(_sweep(write, extra=f"  lora_alpha: {before}\n"), quiet, runner=curve_runner())
    changed = _sweep(write, extra=f"  lora_alpha: {after}\n")
    with pytest.raises(UserError) as raised:
        run_sweep(changed, RunOptions(n_trials=5, quiet=True, plots=False), runner=curve_runner())
    assert f"other ranges: {said}. Run the new space" in str(raised.value)
