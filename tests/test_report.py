"""The report's importance plot states its basis and stands down below its minimum; a plot left
out is explained on the page. Real Optuna studies, built trial by trial with add_trial."""

from __future__ import annotations

import html
import math

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from lorasweep.search.report import IMPORTANCE_MIN_TRIALS, _matplotlib, _plotly, importance_basis, make_report

SPACE = {
    "learning_rate": FloatDistribution(1e-5, 1e-1, log=True),
    "lora_r": CategoricalDistribution([2, 4, 8, 16]),
}


def _study(complete: int, pruned: int = 0) -> optuna.Study:
    """f1 rises with the learning rate and barely with the rank; a few pruned trials beside them."""
    study = optuna.create_study(direction="maximize", study_name="imp")
    for i in range(complete + pruned):
        lr, r = 10 ** (-5 + 4 * i / max(complete + pruned - 1, 1)), [2, 4, 8, 16][i % 4]
        params = {"learning_rate": lr, "lora_r": r}
        if i < complete:
            value = 0.2 * (math.log10(lr) + 5) + 0.001 * r
            study.add_trial(create_trial(params=params, distributions=SPACE, value=value))
        else:
            study.add_trial(
                create_trial(
                    params=params, distributions=SPACE, state=TrialState.PRUNED, intermediate_values={20: 1.0}
                )
            )
    return study


def test_the_minimum_is_ten_complete_trials_or_two_per_searched_parameter():
    assert importance_basis(_study(3, pruned=5)) == (3, IMPORTANCE_MIN_TRIALS)
    study = _study(0)
    wide: dict[str, BaseDistribution] = {f"p{i}": FloatDistribution(0, 1) for i in range(7)}
    study.add_trial(create_trial(params=dict.fromkeys(wide, 0.5), distributions=wide, value=1.0))
    assert importance_basis(study) == (1, 14)


def test_below_the_minimum_the_report_says_how_many_trials_and_why_each_plot_is_missing(tmp_path):
    report = make_report(_study(3), tmp_path)  # no pruned trial: no learning curve either
    reason = report.left_out["Parameter importances"]
    assert f"needs at least {IMPORTANCE_MIN_TRIALS} complete trials" in reason and "has 3" in reason
    assert "no trial has reported an evaluation" in report.left_out["Learning curves"]
    assert not (tmp_path / "importance.png").exists()
    assert [png.name for png in report.pngs] == ["history.png", "parallel.png", "slice.png"]
    page = report.page.read_text(encoding="utf-8")
    section = page.split('<section id="importance">', 1)[1].split("</section>", 1)[0]
    assert "Left out: fANOVA needs at least 10 complete trials" in section
    assert "plotly-graph-div" not in section
    top = page.split("<section", 1)[0]  # said at the top too, each plot with its reason
    for title, why in report.left_out.items():
        assert f"<li>{html.escape(title)}: {html.escape(why)}</li>" in top


def test_at_the_minimum_the_importance_title_names_its_trials(tmp_path):
    study = _study(IMPORTANCE_MIN_TRIALS, pruned=2)
    assert _plotly(study, "importance").layout.title.text == (
        f"Parameter importances: fANOVA over {IMPORTANCE_MIN_TRIALS} complete trials"
    )
    _matplotlib(study, "importance", tmp_path / "importance.png")
    assert (tmp_path / "importance.png").stat().st_size > 0
