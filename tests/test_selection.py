"""Which trial the hand-over picks: the rule `promote.select` over a study's trials."""

from __future__ import annotations

import optuna
import pytest

from lorasweep.search.selection import Criterion, choose, top

# Study.set_metric_names is "experimental" in Optuna; lorasweep names its objectives with it.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _study(rows: list[tuple[tuple[float, float], dict[str, float]]]) -> optuna.Study:
    """A two-objective study (f1 up, eval_loss down) whose trials carry these final metrics."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["f1", "eval_loss"])
    for values, metrics in rows:
        trial = study.ask()
        trial.set_user_attr("metrics", {"f1": values[0], "eval_loss": values[1], **metrics})
        study.tell(trial, values)
    return study


def test_a_rule_can_rank_by_a_metric_that_is_not_an_objective():
    """rougeL is no objective of the study: its direction comes from the metric table (maximize)."""
    study = _study(
        [((0.9, 2.0), {"rougeL": 0.3}), ((0.5, 1.0), {"rougeL": 0.7}), ((0.7, 1.5), {"rougeL": 0.5})]
    )
    chosen, front = choose(study, (Criterion("rougeL"),))
    assert len(front) == 3 and chosen is not None and chosen.number == 1
    assert [t.number for t in top(study, (Criterion("rougeL"),), 3)] == [1, 2, 0]


def test_one_objective_ranks_complete_trials_by_their_value():
    study = optuna.create_study(direction="maximize")
    for value in (0.2, 0.8, 0.5):
        study.add_trial(optuna.trial.create_trial(value=value))
    assert [t.number for t in top(study, (), 2)] == [1, 2]
