"""What gets installed: one import name, `lorasweep`, and worker processes that a user's own
folder cannot hijack."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from .conftest import ROOT

LORASWEEP = Path(sys.executable).parent / "lorasweep"  # the console script a user runs


def test_the_wheel_installs_the_lorasweep_package_and_nothing_else(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            tmp_path,
            ROOT,
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("lorasweep-*.whl")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"lorasweep", f"lorasweep-{version}.dist-info"}
    assert "lorasweep/search/cli.py" in names and "lorasweep/objectives/recipe.py" in names
    assert "lorasweep/objectives/assets/tone.jsonl" in names
    assert "lorasweep/__init__.py" in names  # the Python API: `import lorasweep`


# Each of these, if imported or run, leaves a marker and fails loudly.
_HIJACK = "import pathlib, sys; pathlib.Path({marker!r}).write_text(__name__); sys.exit(3)\n"


def test_workers_run_lorasweeps_code_from_a_folder_with_its_own_search_package(tmp_path):
    """`run --workers 2` from a project folder that holds packages named like lorasweep's folders
    (and a `lorasweep/` of its own): the workers start lorasweep's module, not the folder's."""
    marker = tmp_path / "hijacked"
    hijack = _HIJACK.format(marker=str(marker))
    for name in ("search", "objectives", "lorasweep", "lorasweep/search"):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / name / "__init__.py").write_text(hijack)
        (tmp_path / name / "__main__.py").write_text(hijack)
    (tmp_path / "search.py").write_text(hijack)
    (tmp_path / "sweep.yaml").write_text(
        "study: {name: shadow, sampler: {type: grid}, n_trials: 2}\n"
        'data: {train_split: "train[:64]", eval_split: "train[1400:1416]"}\n'
        "train: {max_steps: 2, eval_steps: 2, logging_steps: 1, per_device_train_batch_size: 8}\n"
        "eval: {max_samples: 2, max_new_tokens: 2}\n"
        "search_space: {lora_r: {type: choice, values: [2, 4]}}\n",
        encoding="utf-8",
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = subprocess.Popen(
        [LORASWEEP, "-q", "run", "sweep.yaml", "--workers", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = run.communicate(timeout=600)
    assert not marker.exists(), f"the folder's {marker.read_text()} ran instead of lorasweep's code"
    assert run.returncode == 0, err

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "mlruns" / "optuna.journal")))
    study = optuna.load_study(study_name="shadow", storage=storage)
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "COMPLETE"]
    # The trials ran in the pool's worker processes (host:pid:start), not in the `run` process.
    workers = {t.user_attrs["worker"].split(":")[1] for t in study.trials}
    assert workers and str(run.pid) not in workers
    assert all(t.user_attrs["metrics"]["eval_loss"] > 0 for t in study.trials)


# What a sweep needs and a look at its results does not: each takes seconds to load.
HEAVY = ("torch", "transformers", "peft", "datasets", "mlflow")
_LOADED = """
import sys
from lorasweep.search.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(code, *sorted(m for m in {heavy!r} if m in sys.modules))
"""


def _loaded(folder, *args: str, heavy: tuple[str, ...] = (*HEAVY, "optuna")) -> list[str]:
    """`lorasweep ARGS` in a fresh interpreter: its exit code, then the libraries of `heavy` it loaded."""
    done = subprocess.run(
        [sys.executable, "-P", "-c", _LOADED.format(heavy=heavy), *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout.splitlines()[-1].split()


def test_help_loads_no_library_and_a_look_at_a_study_no_torch(stores, write):
    from lorasweep.search import RunOptions, load_sweep, run_sweep

    from .test_compare import SWEEP, scored_runner

    run_sweep(load_sweep(write(SWEEP)), RunOptions(quiet=True, plots=False), runner=scored_runner())
    for args in (["--help"], ["--version"], ["trials", "--help"], ["run", "--help"], ["promote", "--help"]):
        assert _loaded(stores, *args, heavy=(*HEAVY, "optuna", "pydantic")) == ["0"], args  # argparse only
    for args in (["trials"], ["trials", "--json"], ["best"], ["best", "--json"]):
        assert _loaded(stores, *args) == ["0", "optuna"], args
    assert _loaded(stores, "studies") == ["0", "mlflow", "optuna"]  # the parent runs' state: no torch


def test_every_command_explains_itself_with_an_example_that_parses(capsys):
    import shlex

    from lorasweep.search.cli import _ABOUT, build_parser, main

    with pytest.raises(SystemExit):
        main(["--help"])
    listed = [
        line.split()[0]
        for line in capsys.readouterr().out.split("COMMAND\n", 1)[1].splitlines()[:40]
        if line.startswith("    ") and not line.startswith("     ")
    ]
    assert listed[:5] == ["run", "trials", "compare", "best", "promote"]  # in the order a user meets them
    for name, (_, about, example) in _ABOUT.items():
        with pytest.raises(SystemExit):
            main([name, "--help"])
        shown = capsys.readouterr().out
        assert about.split(".")[0].split()[-1] in shown and f"example:\n  {example}" in shown, name
        words = shlex.split(example.split(" > ")[0])  # the command, without a redirection of its output
        args = build_parser().parse_args(words[words.index("lorasweep") + 1 :])  # the example is valid
        assert args.command.__name__ == f"_{name}"
