"""The shipped demo, run once as `make demo` runs it (slow: about a minute on 2 quiet CPU cores;
`make test-slow`): it shows real learning, and the example outputs in the docs are what its commands
print (docs/examples.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import docs_script


def _examples() -> ModuleType:
    return docs_script("examples")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The folder where `lorasweep -q run spaces/demo.yaml` ran: one sweep for the module's tests."""
    folder = tmp_path_factory.mktemp("demo")
    _examples().run_demo(folder)
    return folder


@pytest.mark.slow
def test_demo_beats_the_base_model_and_trials_differ(demo):
    trials = json.loads(_examples().output("lorasweep trials --json", demo))
    assert len(trials) == 8  # the file's budget: finished trials, complete or pruned
    f1 = [t["metrics"]["f1"] for t in trials if t["state"] == "COMPLETE"]
    assert len(f1) >= 2
    assert max(f1) > 0.8  # a good learning rate learns the task in 100 steps
    assert max(f1) - min(f1) > 0.3  # and a bad one does not: the hyperparameters matter


@pytest.mark.slow
def test_the_example_outputs_in_the_docs_are_what_the_demo_prints(demo):
    examples = _examples()
    assert examples.all_examples(), "no marked example in README.md or docs/"
    found = examples.differences(examples.fresh_blocks(demo))
    assert not found, examples.stale_message(found)
