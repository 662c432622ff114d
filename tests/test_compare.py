"""Comparing trials of a finished sweep: `trials`, `compare`, `report` and the plots on the parent
run. The sweep is real (storage, tracking) with a stub trial runner: no training."""

from __future__ import annotations

import csv
import io
import json
import re

import optuna
import pytest
from mlflow import MlflowClient

from lorasweep.search import RunOptions, load_sweep, run_sweep
from lorasweep.search.cli import main
from lorasweep.search.storage import open_storage

from .stubs import Scripted, StubRunner

SWEEP = """\
study: {name: cmp, metric: f1, sampler: {type: grid, seed: 0}, n_trials: 4,
        pruner: {type: threshold, lower: -0.65}}
search_space:
  lora_r: {type: choice, values: [1, 2, 4, 8]}
  learning_rate: {type: choice, values: [0.001]}
"""
PROMPTS = [("Phrase: great\nTone:", "positive"), ("Phrase: awful\nTone:", "negative")]


def scored_runner() -> StubRunner:
    """Eval loss 1/r + 0.1 at steps 10 and 20. r=1 is pruned at step 10: f1 is maximised, so trials
    report -eval_loss and the threshold is -0.65;
    f1 grows with r; each finished trial 'generates' its rank after the reference."""
    return StubRunner(
        lambda r: Scripted(
            curve={step: {"eval_loss": 1 / r + 0.1 * 10 / step} for step in (10, 20)},
            metrics={"eval_loss": 1 / r, "eval_perplexity": 2.0, "f1": r / 10},
            samples=[{"prompt": p, "reference": ref, "output": f"{ref} r{r}"} for p, ref in PROMPTS],
        ),
        base={"eval_loss": 5.0, "f1": 0.0},
    )


@pytest.fixture
def finished(stores, write):
    study = run_sweep(load_sweep(write(SWEEP)), RunOptions(quiet=True), runner=scored_runner())
    return {t.params["lora_r"]: t.number for t in study.trials}  # rank -> trial number


def test_trials_table_sorts_and_filters(finished, capsys):
    assert main(["trials", "--sort", "f1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:3] == ["trial", "state", "f1"] and {
        "lora_r",
        "learning_rate",
        "eval_loss",
        "seconds",
    } <= set(header)
    numbers = [int(line.split()[0]) for line in lines[1:]]
    assert numbers == [finished[8], finished[4], finished[2], finished[1]]  # best f1 first, pruned last
    assert "PRUNED" in lines[-1] and "pruned at step 10" in lines[-1]

    assert main(["trials", "--state", "pruned"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [int(r.split()[0]) for r in rows] == [finished[1]]


def test_trials_csv_and_json_are_machine_readable(finished, capsys):
    assert main(["trials", "--csv", "--sort", "eval_loss"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [int(r["param.lora_r"]) for r in rows] == [8, 4, 2, 1]  # lowest eval loss first
    pruned = rows[-1]
    assert pruned["state"] == "PRUNED" and pruned["f1"] == "" and pruned["note"] == "pruned at step 10"
    assert float(rows[0]["f1"]) == pytest.approx(0.8) and rows[0]["mlflow_run_id"]

    assert main(["trials", "--json", "--state", "complete"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(t["params"]["lora_r"] for t in listed) == [2, 4, 8]
    assert all(t["values"] == [t["metrics"]["f1"]] for t in listed)


def test_compare_marks_differences_and_the_best_and_shows_curves_and_generations(finished, capsys):
    numbers = [finished[2], finished[8], finished[1]]
    assert main(["compare", *map(str, numbers)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^≠ lora_r +2 +8 +1$", out, re.MULTILINE)  # differs: marked
    assert re.search(r"^  learning_rate +0.001 +0.001 +0.001$", out, re.MULTILINE)  # same: not marked
    assert re.search(r"^  f1 +0.2 +0.8 \* +-$", out, re.MULTILINE)  # best marked; pruned has none
    assert re.search(r"^  eval_loss +0.5 +0.125 \* +1\.1$", out, re.MULTILINE)  # lowest is best
    curve = re.search(r"^eval_loss curve +(\S+) +(\S+) +(\S+)$", out, re.MULTILINE)
    assert [len(c) for c in curve.groups()] == [2, 2, 1]  # a point per evaluation
    assert curve.group(2) < curve.group(1)  # r=8 lies lower than r=2 on the shared scale
    assert "reference  'positive'" in out and f"trial {finished[8]:<4} 'positive r8'" in out
    assert f"trial {finished[1]:<4} -" in out  # pruned: no generations


def test_compare_refuses_unknown_trials(finished, capsys):
    assert main(["compare", "0", "99"]) == 2
    assert "compare takes trial numbers of the study, but got 99" in capsys.readouterr().err


def test_report_writes_every_plot_as_html_and_png(finished, stores, capsys):
    assert main(["report", "--out", "out"]) == 0
    out = capsys.readouterr().out
    assert "wrote out/report.html and 4 PNGs" in out
    # 3 complete trials: too few for fANOVA's importances, which the report and the command say
    assert "left out: parameter importances: fANOVA needs at least 10 complete trials" in out
    page = (stores / "out" / "report.html").read_text(encoding="utf-8")
    for plot in ("history", "parallel", "importance", "slice", "curves"):
        assert f'<section id="{plot}">' in page
    for plot in ("history", "parallel", "slice", "curves"):
        assert (stores / "out" / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (stores / "out" / "importance.png").exists()
    assert page.count("<script") >= 4 and '<script src="http' not in page  # plotly inline: offline


def test_learning_curves_undo_the_reported_sign(finished):
    from lorasweep.search.report import learning_curves

    study = optuna.load_study(study_name="cmp", storage=open_storage(None))
    metric, curves = learning_curves(study)
    assert metric == "eval_loss"  # f1 is maximised, so trials reported -eval_loss
    state, points = curves[finished[8]]
    assert state == "COMPLETE" and points == {10: pytest.approx(0.225), 20: pytest.approx(0.175)}


def test_the_parent_run_holds_the_plots_refreshed_on_resume(stores, write):
    sweep = load_sweep(write(SWEEP))
    study = run_sweep(sweep, RunOptions(quiet=True, n_trials=2), runner=scored_runner())
    client = MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db")
    parent = study.user_attrs["mlflow_parent_run_id"]

    def report_trials() -> int:
        path = client.download_artifacts(parent, "report/report.html", str(stores))
        return len(re.findall(r"<tr><td>\d+</td>", open(path, encoding="utf-8").read()))

    assert {a.path for a in client.list_artifacts(parent, "report")} >= {
        "report/report.html",
        "report/history.png",
        "report/curves.png",
    }
    assert report_trials() == 2
    run_sweep(sweep, RunOptions(quiet=True, n_trials=4), runner=scored_runner())
    assert report_trials() == 4


def test_plots_that_cannot_be_written_are_told_to_the_user_and_fail_nothing(
    stores, write, capsys, monkeypatch
):
    """Through the CLI, whose warning filters hide library notes: the note is not a warning."""

    def broken(study, out):
        raise OSError("No space left on device")

    monkeypatch.setattr("lorasweep.search.parent.write_report", broken)
    monkeypatch.setattr("lorasweep.objectives.Recipe", lambda *a, **k: scored_runner())
    assert main(["run", str(write(SWEEP))]) == 0
    out = capsys.readouterr().out
    assert "note: the study's plots could not be written: OSError: No space left on device" in out
    assert "best: trial" in out  # the sweep itself finished
    study = optuna.load_study(study_name="cmp", storage=open_storage(None))
    parent = MlflowClient(f"sqlite:///{stores}/mlruns/mlflow.db").get_run(
        study.user_attrs["mlflow_parent_run_id"]
    )
    assert parent.info.status == "FINISHED"


def test_a_multi_objective_report_has_the_pareto_front(stores, write):
    sweep = load_sweep(
        write(
            SWEEP.replace("metric: f1", "metrics: [f1, eval_loss]").replace(
                "\n        pruner: {type: threshold, lower: -0.65}", ""
            )
        )
    )
    study = run_sweep(sweep, RunOptions(quiet=True, plots=False), runner=scored_runner())
    from lorasweep.search.report import write_report

    files = write_report(study, stores / "mo")
    assert (stores / "mo" / "pareto.png") in files
    assert '<section id="pareto">' in (stores / "mo" / "report.html").read_text(encoding="utf-8")


def test_best_names_the_best_trial_and_its_adapter(finished, capsys):
    assert main(["best"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"selected: trial {finished[8]} f1=0.8  ") and "(best f1)" in out
    assert re.search(r"its adapter: runs:/\w+/adapter", out)


def trade_off(r: int) -> Scripted:
    """f1 grows with the rank and so does eval loss: every trial is on the Pareto front."""
    return Scripted(metrics={"f1": r / 10, "eval_loss": r / 10})


@pytest.mark.parametrize(
    ("select", "rank"),
    [
        ("", 8),  # default: the best on the first metric (f1), then the next
        ("promote: {select: [{metric: f1, tolerance: 0.45}, eval_loss]}", 4),  # 0.4 is within 0.45 of 0.8
        ("promote: {select: [eval_loss]}", 1),
    ],
)
def test_best_of_several_objectives_follows_the_files_rule(stores, write, capsys, select, rank):
    text = SWEEP.replace("metric: f1", "metrics: [f1, eval_loss]").replace(
        "\n        pruner: {type: threshold, lower: -0.65}", ""
    )
    study = run_sweep(
        load_sweep(write(text + select + "\n")),
        RunOptions(quiet=True, plots=False),
        runner=StubRunner(trade_off),
    )
    assert len(study.best_trials) == 4
    assert main(["best", "--json"]) == 0
    picked = json.loads(capsys.readouterr().out)
    assert picked["selected"]["params"]["lora_r"] == rank and len(picked["candidates"]) == 4
    assert main(["best"]) == 0
    assert "pareto front (4 trials):" in capsys.readouterr().out


def test_a_bad_selection_rule_is_refused(write):
    from lorasweep.search import SweepError

    with pytest.raises(SweepError, match=r"promote\.select metric must be one of eval_loss.*but got 'f2'"):
        load_sweep(write("promote: {select: [f2]}\n"))
    # Located: the file, the line and the rule's place in promote.select.
    with pytest.raises(SweepError, match=r"sweep\.yaml:1: promote\.select.*tolerance must be a number >= 0"):
        load_sweep(write("promote: {select: [{metric: f1, tolerance: -1}]}\n"))
