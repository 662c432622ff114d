"""Memory across trials in one worker: RSS after each trial of a 20-trial tiny sweep.

    .venv/bin/python benchmarks/memory.py        (or: make bench-memory)

Runs the real study, tracking and objectives.Recipe (tiny model, 10 steps a trial) in a scratch
folder, and prints the resident set size after trial 2 and after trial 20, and their ratio.
Target: within 10% (ratio <= 1.10).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lorasweep.objectives import Recipe
from lorasweep.search import RunOptions, load_sweep, run_sweep
from lorasweep.search.cli import _quiet_libraries

TRIALS = 20
SWEEP = f"""\
study: {{name: memory, metric: eval_loss, sampler: {{type: random, seed: 0}}, n_trials: {TRIALS}}}
data: {{train_split: "train[:400]"}}
train: {{max_steps: 10, logging_steps: 5, eval_steps: 5}}
eval: {{max_samples: 16, max_new_tokens: 6}}
search_space:
  learning_rate: {{type: float, low: 1e-4, high: 1e-2, log: true}}
  lora_r: {{type: choice, values: [2, 4, 8, 16]}}
  batch_size: {{type: choice, values: [8, 16, 32]}}
  target_modules: {{type: choice, values: [all-linear, q_proj, v_proj]}}
"""


def rss_mib() -> float:
    """Resident set size now (not the peak), from /proc on Linux."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class Measured:
    """lorasweep.objectives.Recipe, with the RSS read after every trial."""

    def __init__(self, worker: Recipe) -> None:
        self.worker, self.rss = worker, []
        self.train_rows = worker.train_rows

    def evaluate_base(self):
        return self.worker.evaluate_base()

    def run_trial(self, trial, workdir, on_curve=None, deadline=None):
        try:
            return self.worker.run_trial(trial, workdir, on_curve, deadline)
        finally:
            self.rss.append(rss_mib())


def main() -> int:
    _quiet_libraries(debug=False)
    with tempfile.TemporaryDirectory(prefix="lorasweep-bench-memory-") as folder:
        os.chdir(folder)
        Path("sweep.yaml").write_text(SWEEP, encoding="utf-8")
        sweep = load_sweep("sweep.yaml")
        started = time.monotonic()
        measured = Measured(Recipe(sweep.model, sweep.data, sweep.eval))
        run_sweep(sweep, RunOptions(quiet=True), runner=measured)
        seconds = time.monotonic() - started
    rss = measured.rss
    print(f"{len(rss)} trials in one worker, {seconds:.0f} s, on {os.cpu_count()} CPUs")
    print("trial  RSS MiB")
    for number, value in enumerate(rss, start=1):
        print(f"{number:>5}  {value:7.1f}")
    ratio = rss[TRIALS - 1] / rss[1]
    verdict = "met" if ratio <= 1.10 else "MISSED"
    print(
        f"\nRSS after trial 2: {rss[1]:.1f} MiB, after trial {TRIALS}: {rss[TRIALS - 1]:.1f} MiB, "
        f"ratio {ratio:.3f} (target <= 1.10: {verdict})"
    )
    return 0 if ratio <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
