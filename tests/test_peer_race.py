"""benchmarks/peer_race.py without racing: its sweep files and the arithmetic of its breakdown."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import peer_race
from lorasweep.search.sweepfile._sweep import load_sweep


def test_overlapping_trials_count_once_on_the_wall_clock():
    assert peer_race.union([(0, 10), (12, 20)]) == 18  # one worker: the trials' own seconds
    assert peer_race.union([(0, 10), (5, 20), (6, 8)]) == 20  # two workers: the wall time any ran
    assert peer_race.union([]) == 0


@pytest.mark.parametrize("text, trials", [(peer_race.SWEEP, 4), (peer_race.DEFAULTS_SWEEP, 8)])
def test_the_race_sweeps_are_the_case_with_lorasweeps_defaults_where_unnamed(tmp_path, text, trials):
    (tmp_path / "race.yaml").write_text(text)
    study = load_sweep(tmp_path / "race.yaml").study
    assert study.n_trials == trials and study.sampler == "tpe" and study.seed == 0 and study.pruner is None
    assert study.metrics == ("eval_loss",)
