"""Trials per hour on the tiny demo: one worker with every core against one worker per core.

    .venv/bin/python benchmarks/workers.py        (or: make bench-workers)

Runs `lorasweep run` as a user would, in a scratch folder each time (fresh stores, the tiny base
from its cache): first `--workers 1` (torch's threads on all cores), then `--workers N` for N = the
cores (one thread each). The sweep is the demo's model, data and training (100 steps, generation on
96 eval prompts) over a grid of 8 configurations without a pruner, so both runs train the same
trials. Prints the wall time of each run and its trials per hour, counted from the first trial's
start to the last trial's end (the start-up, base-model evaluation and plots are left out), and the
ratio of the two. The machine's load average is printed before and after: other work on it skews
both figures.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

SPACE = """\
study: {{name: bench, metric: f1, sampler: grid, n_trials: {trials}}}
model: {{base: tiny, target_modules: all-linear}}
data:
  path: builtin:tone
  prompt_template: "Phrase: {{phrase}}\\nTone:"
  response_template: " {{tone}}, about the {{topic}}"
  label_column: tone
  max_length: 64
train: {{max_steps: 100, eval_steps: 20, logging_steps: 10, per_device_eval_batch_size: 64,
        warmup_steps: 5, per_device_train_batch_size: 16}}
eval: {{max_samples: 96, max_new_tokens: 10}}
search_space:
  learning_rate: {{type: choice, values: [0.001, 0.003, 0.01, 0.03]}}
  lora_r: {{type: choice, values: [4, 8]}}
"""
TRIALS = 8


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def run(workers: int) -> tuple[float, float, int]:
    """One sweep: (wall seconds, seconds from the first trial's start to the last one's end, trials)."""
    with tempfile.TemporaryDirectory(prefix=f"lorasweep-bench-workers{workers}-") as folder:
        Path(folder, "bench.yaml").write_text(SPACE.format(trials=TRIALS), encoding="utf-8")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        started = time.monotonic()
        subprocess.run(
            [
                sys.executable,
                "-P",
                "-m",
                "lorasweep.search",
                "-q",
                "run",
                "bench.yaml",
                "--workers",
                str(workers),
            ],
            cwd=folder,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wall = time.monotonic() - started
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(Path(folder, "mlruns", "optuna.journal")))
        )
        trials = optuna.load_study(study_name="bench", storage=storage).get_trials(
            states=(optuna.trial.TrialState.COMPLETE,)
        )
        span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
        return wall, span.total_seconds(), len(trials)


def main() -> int:
    cores = len(os.sched_getaffinity(0))
    print(f"{cpu_name()}, {cores} cores; load average before: {os.getloadavg()[0]:.2f}")
    rows = []
    for workers in (1, cores):
        wall, span, trials = run(workers)
        rows.append((workers, wall, span, trials, trials / span * 3600))
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print("workers  threads each  trials  wall s  trials s  trials/hour  ratio")
    base = rows[0][4]
    for workers, wall, span, trials, per_hour in rows:
        threads = max(1, cores // workers)
        print(
            f"{workers:>7}  {threads:>12}  {trials:>6}  {wall:>6.0f}  {span:>8.0f}  {per_hour:>11.0f}"
            f"  {per_hour / base:>5.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
