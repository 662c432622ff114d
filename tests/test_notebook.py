"""lorasweep in a notebook, executed headless by a real Jupyter kernel (nbclient): quiet=True prints
nothing, the default shows one widget bar, and no output holds a raw ANSI code or a TqdmWarning."""

from __future__ import annotations

import json

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

WIDGET = "application/vnd.jupyter.widget-view+json"

CELLS = [
    # setup
    """\
import lorasweep

SWEEP = {
    "study": {"name": "notebook", "n_trials": 1, "metric": "f1"},
    "search_space": {"lora_r": {"type": "choice", "values": [2, 4]}},
    "train": {"max_steps": 4, "eval_steps": 2},
    "eval": {"max_samples": 4},
}""",
    # quiet: the first trial, and the first load of every library
    "study = lorasweep.run(SWEEP, quiet=True, workers=1)",
    # the default: the second trial, with its bar
    "study = lorasweep.resume(study, trials=2, workers=1)",
    # what a notebook does next
    """\
import os

table = lorasweep.trials(study)
chosen = lorasweep.best(study)
side_by_side = lorasweep.compare([0, 1], study=study)
page = lorasweep.report(study)
print(len(table), chosen.number in (0, 1), "eval_loss" in side_by_side, page.suffix, os.path.isfile(page))""",
    # without ipywidgets: plain lines, and tqdm.auto (which would warn) is never asked
    """\
import sys

from lorasweep.search.progress import show_as

sys.modules["ipywidgets"] = None  # as if it were not installed
print(show_as("auto"), show_as("bar"))""",
]


def _text(output) -> str:
    """Everything an output carries, as the notebook file stores it."""
    return json.dumps(output)


@pytest.mark.slow
def test_a_notebook_runs_clean(stores):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(stores)}},  # the kernel runs in the test's folder
    )
    client.execute()
    setup, quiet, default, after, no_widgets = (cell.outputs for cell in notebook.cells)

    assert setup == [] and quiet == []  # quiet: no stream at all, stderr least of all
    for output in (*default, *after, *no_widgets):
        assert "\\u001b[" not in _text(output), output  # no raw ANSI code (Optuna's colors)
        assert "TqdmWarning" not in _text(output) and "IProgress" not in _text(output), output
    assert not [o for o in default if o.get("name") == "stderr"], default  # no library bar or warning
    widgets = [o for o in default if o["output_type"] == "display_data" and WIDGET in o["data"]]
    assert len(widgets) == 1, default  # one bar, tqdm's notebook widget
    printed = "".join(o.get("text", "") for o in default if o.get("name") == "stdout")
    assert "trial   1 COMPLETE" in printed or "trial   1 PRUNED" in printed, printed
    assert [o.get("text") for o in after] == ["2 True True .html True\n"], after
    assert [o.get("text") for o in no_widgets] == ["lines lines\n"], no_widgets
