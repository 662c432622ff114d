"""A winner that must win: ties on the objective are broken by eval loss, then trial number, wherever
a best is picked; a best trial that does not beat the base model is said so by `best` and refused by
`promote`."""

from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import create_trial

import lorasweep
from lorasweep.search import RunOptions, UserError, cli, load_sweep, run_sweep
from lorasweep.search.cli import main
from lorasweep.search.record import DUPLICATE_OF, METRICS, save_base_metrics
from lorasweep.search.selection import Criterion, choose, no_gain, pick, require_gain, tie_note, top

from .stubs import Scripted, StubRunner

# Study.set_metric_names is "experimental" in Optuna; lorasweep names its objectives with it.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _one_objective(rows: list[tuple[float, float | None]]) -> optuna.Study:
    """A study maximizing f1 whose complete trials score (f1, eval_loss), in trial-number order."""
    study = optuna.create_study(direction="maximize")
    study.set_metric_names(["f1"])
    for f1, loss in rows:
        metrics = {"f1": f1} | ({"eval_loss": loss} if loss is not None else {})
        study.add_trial(create_trial(value=f1, user_attrs={METRICS: metrics}))
    return study


def test_a_tie_on_the_objective_goes_to_the_lower_eval_loss_then_the_lower_trial_number():
    """The issue's case: every trial f1 0; trial 1's eval loss is lowest, so trial 1 wins, not 0."""
    study = _one_objective([(0.0, 4.599), (0.0, 4.236), (0.0, 4.236), (0.0, None), (-0.1, 0.1)])
    chosen, candidates = choose(study, ())
    assert chosen is not None and chosen.number == 1 and [t.number for t in candidates] == [1]
    assert pick(study, ()).number == 1
    # --top K and so an adapter bundle's "best first" order: same rule; no eval loss goes last
    assert [t.number for t in top(study, (), 5)] == [1, 2, 0, 3, 4]
    assert tie_note(study, (), chosen) == (
        "a tie on f1=0 with trials 0, 2, 3 broken by eval_loss, then trial number (lower wins)"
    )


def test_a_tie_on_value_and_eval_loss_goes_to_the_lower_trial_number():
    study = _one_objective([(0.5, 2.0), (0.7, 3.0), (0.7, 3.0)])
    assert pick(study, ()).number == 1
    assert [t.number for t in top(study, (), 3)] == [1, 2, 0]
    assert (
        tie_note(study, (), study.trials[1])
        == "a tie on f1=0.7 with trial 2 broken by trial number (lower wins)"
    )
    assert tie_note(_one_objective([(0.5, 2.0), (0.7, 3.0)]), (), study.trials[1]) is None  # no tie


def test_a_minimized_objective_ties_the_same_way_and_a_duplicate_is_no_tie_of_its_own():
    """eval_loss down: the lowest wins; a tie on it goes to the lower trial number. Trial 3 reused
    trial 1's result (same configuration): it stands for trial 1, not a rival that tied with it."""
    study = optuna.create_study(direction="minimize")
    study.set_metric_names(["eval_loss"])
    for loss, twin in [(2.0, None), (1.5, None), (1.5, None), (1.5, 1)]:
        study.add_trial(
            create_trial(
                value=loss,
                user_attrs={METRICS: {"eval_loss": loss}}
                | ({DUPLICATE_OF: twin} if twin is not None else {}),
            )
        )
    assert pick(study, ()).number == 1
    assert [t.number for t in top(study, (), 2)] == [1, 2]
    assert (
        tie_note(study, (), study.trials[1])
        == "a tie on eval_loss=1.5 with trial 2 broken by trial number (lower wins)"
    )


def test_with_several_objectives_the_rules_last_metric_ties_go_to_the_lower_eval_loss():
    """f1 up and rougeL up; trials 1 and 2 tie on the rule's last metric (f1) within the front."""
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_metric_names(["f1", "rougeL"])
    for f1, rouge, loss in ((0.5, 0.9, 1.0), (0.8, 0.2, 3.0), (0.8, 0.2, 2.0)):
        metrics = {"f1": f1, "rougeL": rouge, "eval_loss": loss}
        study.add_trial(create_trial(values=[f1, rouge], user_attrs={METRICS: metrics}))
    rule = (Criterion("f1"),)
    chosen, front = choose(study, rule)
    assert chosen is not None and chosen.number == 2 and [t.number for t in front] == [0, 1, 2]
    assert [t.number for t in top(study, rule, 3)] == [2, 1, 0]
    assert tie_note(study, rule, chosen) == "a tie on f1=0.8 with trial 1 broken by eval_loss (lower wins)"


def test_a_best_trial_must_beat_the_base_strictly_and_a_study_without_base_scores_is_not_checked():
    study = _one_objective([(0.0, 4.2), (0.0, 4.5)])
    assert no_gain(study, study.trials[0]) is None  # no base scores: an older study, not refused
    require_gain(study, study.trials[0])
    save_base_metrics(study, {"f1": 0.0, "eval_loss": 5.0})
    found = no_gain(study, study.trials[0])
    assert found is not None and found.line() == (
        "best trial 0 f1=0 does not beat the base model (f1=0): no trial learned; see "
        "docs/failures.md#no-trial-beats-the-base-model"
    )
    with pytest.raises(
        UserError, match=r"but got trial=0 f1=0, base model f1=0.*--allow-no-gain \(or --force\)"
    ):
        require_gain(study, study.trials[0])
    save_base_metrics(study, {"f1": -0.01})
    assert no_gain(study, study.trials[0]) is None  # above the base, if only just


def test_with_several_objectives_a_trial_beating_the_base_on_one_of_them_is_enough():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["f1", "eval_loss"])
    study.add_trial(create_trial(values=[0.0, 4.0], user_attrs={METRICS: {"f1": 0.0, "eval_loss": 4.0}}))
    save_base_metrics(study, {"f1": 0.0, "eval_loss": 5.0})
    assert no_gain(study, study.trials[0]) is None  # a lower eval loss than the base's
    save_base_metrics(study, {"f1": 0.0, "eval_loss": 4.0})
    found = no_gain(study, study.trials[0])
    assert found is not None and (found.scores, found.base) == ("f1=0 eval_loss=4", "f1=0 eval_loss=4")


ZERO = """\
study: {name: zero, metric: f1, sampler: {type: grid, seed: 0}, n_trials: 3}
search_space:
  lora_r: {type: choice, values: [1, 2, 4]}
"""


@pytest.fixture
def all_zero(stores, write) -> optuna.Study:
    """A real sweep (storage, MLflow, the base scored before its trials) in which no trial learned:
    every trial scores f1 0, as the base; r=2 has the lowest eval loss."""
    runner = StubRunner(
        lambda r: Scripted(metrics={"f1": 0.0, "eval_loss": {1: 4.6, 2: 4.2, 4: 4.4}[r]}),
        base={"f1": 0.0, "eval_loss": 5.0},
    )
    return run_sweep(load_sweep(write(ZERO)), RunOptions(quiet=True, plots=False), runner=runner)


def test_an_all_zero_sweep_is_named_by_best_and_run_and_refused_by_promote(all_zero, stores, capsys):
    winner = next(t.number for t in all_zero.trials if t.params["lora_r"] == 2)
    assert winner != 0  # Optuna's best_trial, by trial number alone, would name trial 0
    others = ", ".join(str(t.number) for t in all_zero.trials if t.number != winner)
    no_gain_line = (
        f"best trial {winner} f1=0 does not beat the base model (f1=0): no trial learned; see "
        "docs/failures.md#no-trial-beats-the-base-model"
    )
    assert main(["best"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"selected: trial {winner} f1=0 ")
    assert out[0].endswith(f"(best f1; a tie on f1=0 with trials {others} broken by eval_loss (lower wins))")
    assert out[-1] == no_gain_line
    assert lorasweep.best("zero").no_gain == no_gain_line
    parent = MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db").get_run(
        all_zero.user_attrs["mlflow_parent_run_id"]
    )
    assert parent.data.metrics["best_trial"] == winner  # the parent run names the same winner

    cli._print_result(all_zero)  # what `run`, `resume` and `worker` print at their end
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"best: trial {winner} f1=0 (base 0)") and out[-1] == no_gain_line

    assert main(["promote"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: a trial to promote must beat the base model on the objective, but got trial={winner} "
        "f1=0, base model f1=0: no trial learned. Sweep longer or check the data "
        "(docs/failures.md#no-trial-beats-the-base-model), or add --allow-no-gain (or --force) to promote "
        "it anyway."
    )
    with pytest.raises(UserError, match="must beat the base model"):
        lorasweep.promote("zero", quiet=True)
    # Allowed, it goes on to the hand-over: here to --out's check, which comes before any export.
    (stores / "full").mkdir()
    (stores / "full" / "kept.txt").write_text("x")
    with pytest.raises(UserError, match="--out must be a new or empty folder"):
        lorasweep.promote("zero", quiet=True, allow_no_gain=True, out=stores / "full")
    with pytest.raises(UserError, match="--out must be a new or empty folder"):
        lorasweep.promote("zero", quiet=True, force=True, out=stores / "full")  # force passes every refusal
