"""How fast does `lorasweep` answer? CPU seconds (user + system) of the everyday commands, beside
`python -c pass` and `mlflow --help`, in one run.

    .venv/bin/python benchmarks/cli.py      (or: make bench-cli; about 1 min on 2 cores)

`trials` and `best` read a study of the demo's sweep file (spaces/demo.yaml, its 8 trials scored by
a stub, not trained: what is measured is the command, not the sweep). Each command runs REPS times
in a fresh process; the table shows the median, with the ratio to `python -c pass`.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REPS = 5
TARGETS = {"lorasweep --help": 0.3, "lorasweep trials": 1.5, "lorasweep best": 1.5}  # CPU seconds


def _demo_study(folder: Path) -> None:
    """The demo's sweep file run to its budget in `folder`, each trial scored by its parameters."""
    import optuna

    from lorasweep.objectives import TrialResult
    from lorasweep.search import RunOptions, load_sweep, run_sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    class Scored:
        train_rows = 1000

        def evaluate_base(self) -> dict[str, float]:
            return {"eval_loss": 3.0, "f1": 0.0}

        def run_trial(self, trial, workdir, on_curve=None, deadline=None) -> TrialResult:
            lr = trial.training_args["learning_rate"]
            return TrialResult(
                metrics={"eval_loss": 1 + abs(lr - 3e-3) * 100, "f1": min(lr * 100, 1.0)},
                adapter_dir=None,
                steps=1,
            )

    shutil.copy(ROOT / "spaces" / "demo.yaml", folder / "demo.yaml")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        run_sweep(load_sweep(folder / "demo.yaml"), RunOptions(quiet=True, plots=False), runner=Scored())
    finally:
        os.chdir(cwd)


def cpu_seconds(command: list[str], folder: Path) -> float:
    """User + system CPU seconds of one run of `command` (and whatever it starts and waits for)."""
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed")
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="lorasweep-bench-cli-") as scratch:
        folder = Path(scratch)
        _demo_study(folder)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "mlflow --help": [str(BIN / "mlflow"), "--help"],
            "lorasweep --help": [str(BIN / "lorasweep"), "--help"],
            "lorasweep trials --help": [str(BIN / "lorasweep"), "trials", "--help"],
            "lorasweep trials": [str(BIN / "lorasweep"), "trials", "--study", "demo"],
            "lorasweep best": [str(BIN / "lorasweep"), "best", "--study", "demo"],
        }
        figures = {name: [cpu_seconds(c, folder) for _ in range(REPS)] for name, c in commands.items()}
    base = statistics.median(figures["python -c pass"])
    print(
        f"\n{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), load average "
        f"{os.getloadavg()[0]:.1f}; median of {REPS} runs each\n"
    )
    print("| command | CPU seconds | / python -c pass | target | verdict |")
    print("| --- | --- | --- | --- | --- |")
    for name, runs in figures.items():
        median = statistics.median(runs)
        target = TARGETS.get(name)
        verdict = "-" if target is None else ("met" if median <= target else "MISSED")
        print(
            f"| `{name}` | {median:.2f} | {median / base:.1f}x "
            f"| {f'<= {target}' if target else '-'} | {verdict} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
