"""What MLflow's system metrics cost a trial: the same tiny sweep with them on and off, alternating.

    .venv/bin/python benchmarks/system_metrics.py      (or: make bench-system-metrics; ~4 min on 2 cores)

Each round runs the sweep twice in fresh stores, once with the monitor sampling every 2 s
(lorasweep's default) and once with --no-system-metrics, in alternating order; a trial's own
wall time (the wall_seconds metric on its run: training, evaluation, generation, logging) is
compared as the ratio of medians. One warm-up sweep first, so the tiny base and imports are paid.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from mlflow import MlflowClient

import lorasweep
from lorasweep.search.cli import _quiet_libraries

ROUNDS = 6
SWEEP = {
    "study": {"name": "sysmetrics", "metric": "f1", "sampler": {"type": "random", "seed": 0}, "n_trials": 4},
    "data": {"train_split": "train[:400]"},
    "train": {"max_steps": 40, "logging_steps": 10, "eval_steps": 20},
    "eval": {"max_samples": 32, "max_new_tokens": 8},
    "search_space": {
        "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "lora_r": {"type": "choice", "values": [4, 8]},
    },
}


def trial_seconds(system_metrics: bool) -> tuple[list[float], int]:
    """The sweep in a fresh folder: each trial's wall seconds, and how many system samples it logged."""
    with tempfile.TemporaryDirectory(prefix="bench-sysmetrics-") as folder:
        os.chdir(folder)
        study = lorasweep.run(SWEEP, quiet=True, system_metrics=system_metrics)
        client = MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
        runs = [client.get_run(t.user_attrs["mlflow_run_id"]) for t in study.trials]
        samples = sum(
            len(client.get_metric_history(r.info.run_id, "system/cpu_utilization_percentage")) for r in runs
        )
        os.chdir(Path(__file__).parent)
        return [r.data.metrics["wall_seconds"] for r in runs], samples


def main() -> None:
    _quiet_libraries(debug=False)
    trial_seconds(True)  # warm-up
    on: list[float] = []
    off: list[float] = []
    samples = 0
    for round_ in range(ROUNDS):
        for enabled in (True, False) if round_ % 2 == 0 else (False, True):
            seconds, n = trial_seconds(enabled)
            (on if enabled else off).extend(seconds)
            samples += n
    ratio = statistics.median(on) / statistics.median(off)
    print(f"{len(on)} trials each way, {ROUNDS} alternating rounds, {os.cpu_count()} CPUs")
    print(f"{'system metrics':<16} {'median s/trial':>15} {'min':>7} {'max':>7}")
    for name, values in (("on (every 2 s)", on), ("off", off)):
        print(f"{name:<16} {statistics.median(values):>15.2f} {min(values):>7.2f} {max(values):>7.2f}")
    print(f"ratio on/off: {ratio:.3f}; {samples / len(on):.1f} samples logged per trial")


if __name__ == "__main__":
    main()
