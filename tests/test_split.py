"""The eval carve-out (objectives/_split.py) draws the very rows scikit-learn's train_test_split
drew before it, stratified or not, on many shapes of data, and refuses where scikit-learn did."""

import random

import pytest
from sklearn.model_selection import train_test_split

from lorasweep.objectives._split import split_indices


def _cases():
    rng = random.Random(0)
    yield (
        1500,
        0.2,
        0,
        [("formal", "casual", "angry")[i % 3] for i in range(1500)],
    )  # the shipped tone data's shape
    for n in (10, 37, 100, 333):
        for fraction in (0.1, 0.2, 0.25, 0.5):
            for seed in (0, 1, 42):
                classes = rng.randint(2, 6)
                strata = [f"c{rng.randint(0, classes - 1)}" for _ in range(n)]
                yield n, fraction, seed, strata
                yield n, fraction, seed, None


@pytest.mark.parametrize("n, fraction, seed, strata", list(_cases()))
def test_split_is_scikit_learns(n, fraction, seed, strata):
    try:
        expected = train_test_split(list(range(n)), test_size=fraction, random_state=seed, stratify=strata)
    except ValueError:
        with pytest.raises(ValueError):
            split_indices(n, fraction, seed, strata)
        return
    assert split_indices(n, fraction, seed, strata) == tuple(list(map(int, side)) for side in expected)


def test_stratum_of_one_row_is_refused_as_scikit_learn_refuses_it():
    strata = ["a"] * 9 + ["b"]
    with pytest.raises(ValueError):
        train_test_split(list(range(10)), test_size=0.2, random_state=0, stratify=strata)
    with pytest.raises(ValueError):
        split_indices(10, 0.2, 0, strata)


def test_loading_data_imports_no_scikit_learn():
    import subprocess
    import sys

    code = (
        "import sys; from lorasweep.objectives.specs import DataSpec; "
        "from lorasweep.objectives.data import load_rows; "
        "load_rows(DataSpec(path='builtin:tone', prompt_template='Phrase: {phrase}', "
        "response_template=' {tone}', label_column='tone')); print('sklearn' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert done.stdout.strip().splitlines()[-1] == "False"
