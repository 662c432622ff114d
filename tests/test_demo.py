"""The shipped demo shows real learning (slow: about two minutes on 2 CPU cores; `make test-slow`)."""

from __future__ import annotations

import json
import shutil

import pytest

from lorasweep.search.cli import main

from .conftest import ROOT


@pytest.mark.slow
def test_demo_beats_the_base_model_and_trials_differ(in_tmp, capsys):
    shutil.copytree(ROOT / "spaces", in_tmp / "spaces")
    assert main(["-q", "run", "spaces/demo.yaml", "--trials", "3"]) == 0
    capsys.readouterr()
    assert main(["trials", "--json"]) == 0
    trials = json.loads(capsys.readouterr().out)
    f1 = [t["metrics"]["f1"] for t in trials]
    assert len(f1) == 3
    assert max(f1) > 0.8  # a good learning rate learns the task in 100 steps
    assert max(f1) - min(f1) > 0.3  # and a bad one does not: the hyperparameters matter
