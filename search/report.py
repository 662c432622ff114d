"""Plots of a study, as a self-contained HTML report and PNGs.

The plots are Optuna's own (`optuna.visualization` for the interactive HTML, its matplotlib twins
for the PNGs), except the learning curves: trials report a signed metric (eval loss negated in a
maximised study, see objective.reported_metric), and Optuna's intermediate-values plot would show the
signs. The same files are logged on the MLflow parent run at the end of every sweep.
"""

from __future__ import annotations

import html
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .progress import format_value, objective_names
from .record import StudyRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plot:
    name: str  # file stem: history.png, ...
    title: str
    why: str  # one line under the title: what the plot answers


@dataclass(frozen=True)
class Report:
    """What `make_report` wrote: the HTML page, one PNG per plot drawn, and the plots it left out,
    each with the reason (the page says it too, in the plot's section and at the top)."""

    page: Path
    pngs: list[Path]
    left_out: dict[str, str]  # plot title -> why it is not in the report

    @property
    def files(self) -> list[Path]:
        return [self.page, *self.pngs]


class LeftOut(Exception):
    """A plot the study cannot have (yet), with the reason the report gives in its place."""


# fANOVA splits the objective's variance between the parameters with a random forest fitted to the
# complete trials. On a handful of trials each tree sees a few points, and the ranking follows
# whichever parameter happens to separate them: on the demo's 3 complete trials, which differ in
# learning_rate, lora_r and lora_alpha_per_rank at once, it ranked lora_r (0.48) above learning_rate
# (0.17). 10 is where Optuna's own TPE stops sampling at random and starts modelling; two trials per
# parameter keeps a wide space from resting on one point per dimension. Below this many complete
# trials the report shows a note instead.
IMPORTANCE_MIN_TRIALS = 10
IMPORTANCE_TRIALS_PER_PARAM = 2


def importance_basis(study: optuna.Study) -> tuple[int, int]:
    """(complete trials, the fewest the importance plot needs) for `study`."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    searched = {
        name for t in complete for name, d in t.distributions.items() if not d.single()
    }  # a one-value parameter cannot explain anything: fANOVA leaves it out too
    return len(complete), max(IMPORTANCE_MIN_TRIALS, IMPORTANCE_TRIALS_PER_PARAM * len(searched))


def plots_for(study: optuna.Study) -> list[Plot]:
    several = len(study.directions) > 1
    plots = [
        Plot("history", "Optimization history", "How the objective improved, trial by trial."),
        Plot("parallel", "Parallel coordinates", "Which parameter values the good trials share."),
        Plot(
            "importance",
            "Parameter importances",
            "Which parameters moved the objective most (fANOVA over the complete trials).",
        ),
        Plot("slice", "Slice", "The objective against each parameter, one dot per trial."),
        Plot("curves", "Learning curves", "Eval loss at each evaluation, pruned trials included (dashed)."),
    ]
    if several:
        plots.insert(0, Plot("pareto", "Pareto front", "The trials no other trial beats on every metric."))
    return plots


def make_report(study: optuna.Study, out: Path) -> Report:
    """Write report.html and one PNG per plot into `out`. A plot the study cannot have (too few
    trials for it, importances below `importance_basis`'s minimum) is left out, and the page says
    why in its place and at its top."""
    out.mkdir(parents=True, exist_ok=True)
    sections, written, left_out = [], [], {}
    first_figure = True
    for plot in plots_for(study):
        try:
            figure = _plotly(study, plot.name)
            png = out / f"{plot.name}.png"
            _matplotlib(study, plot.name, png)
        except (LeftOut, ValueError, RuntimeError, ZeroDivisionError) as e:  # too few trials for it
            log.info("plot %s left out: %s", plot.name, e)
            left_out[plot.title] = str(e)
            sections.append(_section(plot, f"<p class=note>Left out: {html.escape(str(e))}</p>"))
            continue
        written.append(png)
        # plotly.js goes in once, inline: the report opens offline, from a file, anywhere.
        body = figure.to_html(full_html=False, include_plotlyjs="inline" if first_figure else False)
        first_figure = False
        sections.append(_section(plot, body))
    page = out / "report.html"
    page.write_text(_page(study, sections, left_out), encoding="utf-8")
    return Report(page, written, left_out)


def write_report(study: optuna.Study, out: Path) -> list[Path]:
    """`make_report`'s files: report.html first, then the PNGs."""
    return make_report(study, out).files


# -- the figures ---------------------------------------------------------------------------------
def _objective(study: optuna.Study) -> tuple[Callable[[FrozenTrial], float] | None, str]:
    names = objective_names(study)
    if len(study.directions) > 1:  # single-metric plots show the first metric
        return (lambda t: t.values[0]), names[0]
    return None, names[0]


# Optuna draws these in both backends under the same names; the learning curves are drawn here.
_OPTUNA_PLOTS = {
    "pareto": "plot_pareto_front",
    "history": "plot_optimization_history",
    "parallel": "plot_parallel_coordinate",
    "importance": "plot_param_importances",
    "slice": "plot_slice",
}


def _optuna_plot(study: optuna.Study, name: str, backend: Any) -> Any:
    """One of Optuna's plots from `backend` (optuna.visualization or its matplotlib twin)."""
    plot = getattr(backend, _OPTUNA_PLOTS[name])
    if name == "pareto":
        return plot(study)
    target, target_name = _objective(study)
    if name != "importance":
        return plot(study, target=target, target_name=target_name)
    complete, needed = importance_basis(study)
    if complete < needed:
        raise LeftOut(
            f"fANOVA needs at least {needed} complete trials to rank the parameters, and the study "
            f"has {complete}: on fewer, the ranking is noise. Run more trials "
            f"(lorasweep resume {study.study_name} --trials N)."
        )
    figure = plot(study, target=target, target_name=target_name, evaluator=_importance_evaluator())
    title = f"Parameter importances: fANOVA over {complete} complete trials"
    if hasattr(figure, "update_layout"):  # plotly's figure; the matplotlib twin returns its axes
        figure.update_layout(title=title)
    else:
        figure.set_title(title)
    return figure


def _plotly(study: optuna.Study, name: str) -> Any:
    import optuna.visualization as vis

    return _curves_plotly(study) if name == "curves" else _optuna_plot(study, name, vis)


def _matplotlib(study: optuna.Study, name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    with warnings.catch_warnings():  # "experimental" twins; axis limits of a one-value parameter
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        axes = _curves_matplotlib(study, plt) if name == "curves" else _optuna_plot(study, name, vis)
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    figure = first.figure
    figure.set_size_inches(max(figure.get_size_inches()[0], 8), max(figure.get_size_inches()[1], 5))
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def _importance_evaluator() -> optuna.importance.BaseImportanceEvaluator:
    """fANOVA, seeded: it splits the objective's variance, whatever the direction. (Optuna's default,
    PED-ANOVA, assumes lower is better, which a maximised first metric is not.)"""
    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def learning_curves(study: optuna.Study) -> tuple[str, dict[int, tuple[str, dict[int, float]]]]:
    """(metric name, {trial number: (state, {step: value})}) with the report's sign undone."""
    metric, sign = StudyRecord.of(study).reported or ("intermediate value", 1.0)
    curves = {
        t.number: (t.state.name, {step: sign * v for step, v in sorted(t.intermediate_values.items())})
        for t in study.get_trials(deepcopy=False)
        if t.intermediate_values
    }
    if not curves:
        raise ValueError("no trial has reported an evaluation")
    return metric, curves


def _all_positive(curves: dict[int, tuple[str, dict[int, float]]]) -> bool:
    """Losses fall over orders of magnitude: on a log scale the good trials don't flatten to 0."""
    return all(v > 0 for _, points in curves.values() for v in points.values())


def _curves_plotly(study: optuna.Study) -> Any:
    import plotly.graph_objects as go

    metric, curves = learning_curves(study)
    figure = go.Figure()
    for number, (state, points) in curves.items():
        figure.add_trace(
            go.Scatter(
                x=list(points),
                y=list(points.values()),
                mode="lines+markers",
                name=f"trial {number} ({state.lower()})",
                line={"dash": "dash" if state == "PRUNED" else "solid"},
            )
        )
    figure.update_layout(title="Learning curves", xaxis_title="step", yaxis_title=metric)
    if _all_positive(curves):
        figure.update_yaxes(type="log")
    return figure


def _curves_matplotlib(study: optuna.Study, plt: Any) -> Any:
    metric, curves = learning_curves(study)
    _figure, axes = plt.subplots()
    for number, (state, points) in curves.items():
        axes.plot(
            list(points),
            list(points.values()),
            marker="o",
            linestyle="--" if state == "PRUNED" else "-",
            label=f"trial {number} ({state.lower()})",
        )
    axes.set(title="Learning curves", xlabel="step", ylabel=metric)
    if _all_positive(curves):
        axes.set_yscale("log")
    axes.legend(fontsize="small", ncol=2)
    return axes


# -- the page ------------------------------------------------------------------------------------
def _section(plot: Plot, body: str) -> str:
    return (
        f'<section id="{plot.name}"><h2>{html.escape(plot.title)}</h2>'
        f"<p>{html.escape(plot.why)}</p>{body}</section>"
    )


def _page(study: optuna.Study, sections: list[str], left_out: dict[str, str]) -> str:
    metrics = objective_names(study)
    directions = [d.name.lower() for d in study.directions]
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = t.values if t.state == TrialState.COMPLETE and t.values else []
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(c))}</td>"
                for c in (
                    t.number,
                    t.state.name,
                    " ".join(format_value(v) for v in values) or "-",
                    " ".join(
                        f"{k}={format_value(v) if isinstance(v, float) else v}" for k, v in t.params.items()
                    ),
                )
            )
            + "</tr>"
        )
    objective = ", ".join(f"{m} ({d})" for m, d in zip(metrics, directions, strict=True))
    missing = "".join(f"<li>{html.escape(title)}: {html.escape(why)}</li>" for title, why in left_out.items())
    missing = f"<p class=note>Left out of this report:</p><ul class=note>{missing}</ul>" if missing else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lorasweep: {html.escape(study.study_name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ padding: 2px 10px; border-bottom: 1px solid #ddd; }}
section {{ margin-top: 2.5em; }} .note {{ color: #777; }}
</style></head><body>
<h1>Study {html.escape(study.study_name)}</h1>
<p>Objective: {html.escape(objective)}. {len(rows)} trials.</p>
{missing}
<table><tr><th>trial</th><th>state</th><th>value</th><th>params</th></tr>
{"".join(rows)}
</table>
{"".join(sections)}
</body></html>
"""
