"""How to split this machine's cores between worker processes and threads, at two bases' sizes.

    .venv/bin/python benchmarks/workers.py [--shapes tiny,smol] [--trials N]   (or: make bench-workers)

Runs `lorasweep run` as a user would, in a scratch folder each time (fresh stores), for each split
of the cores: 1 process x N threads (`--workers 1`: torch's threads on all cores), then N processes
x 1 thread (`--workers N`, N = the cores), alternating, on

- tiny: the demo's model, data and training (100 steps, generation on 96 eval prompts), a grid of
  TRIALS configurations without a pruner;
- smol: a random-init model with SmolLM2-135M's published shape (benchmarks/scale_models.build:
  offline, the shape sets the cost; built once into lorasweep's cache folder, outside the timing),
  SMOL_STEPS steps of 8 rows of 64 tokens a trial, SMOL_TRIALS trials.

Prints, per shape and split, the whole run's wall time (start-up, base evaluation, trials, plots:
what a user waits for), the span from the first trial's start to the last one's end, and each
split's wall time over 1 process x N threads. `uptime` is printed before and after: other work on
the machine skews both splits, which is why they alternate and are compared as ratios of one run.
`--workers auto`'s rule (search/_machine.py, SMALL_BASE_PARAMS) comes from this table.
"""

from __future__ import annotations

import argparse
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
SMOL_STEPS = 8
SMOL_SPACE = """\
study: {{name: bench, metric: eval_loss, sampler: grid, n_trials: {trials}}}
model: {{base: {base}, target_modules: all-linear}}
data: {{max_length: 64, train_split: "train[:400]", eval_split: "train[1400:1416]"}}
train: {{max_steps: {steps}, eval_steps: {steps}, logging_steps: {steps}, per_device_train_batch_size: 8,
        per_device_eval_batch_size: 16, warmup_steps: 0}}
eval: {{max_samples: 4, max_new_tokens: 8, batch_size: 4}}
search_space:
  learning_rate: {{type: choice, values: [0.0001, 0.0003, 0.001, 0.003]}}
  lora_r: {{type: choice, values: [4, 8]}}
"""
TRIALS = 4
SMOL_TRIALS = 2  # one trial per process at 2 x 1: the split, not the queue, is what is compared


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run(sweep: str, workers: int) -> tuple[float, float, int]:
    """One sweep: (wall seconds, seconds from the first trial's start to the last one's end, trials)."""
    with tempfile.TemporaryDirectory(prefix=f"lorasweep-bench-workers{workers}-") as folder:
        Path(folder, "bench.yaml").write_text(sweep, encoding="utf-8")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        command = [sys.executable, "-P", "-m", "lorasweep.search", "-q", "run", "bench.yaml"]
        started = time.monotonic()
        subprocess.run(
            [*command, "--workers", str(workers)], cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL
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


def sweeps(shapes: list[str], trials: int, smol_trials: int) -> dict[str, str]:
    out = {}
    if "tiny" in shapes:
        out["tiny (1.0M params)"] = SPACE.format(trials=trials)
    if "smol" in shapes:
        base = smol_base()
        out["SmolLM2-135M shape (135M params)"] = SMOL_SPACE.format(
            trials=smol_trials, base=base, steps=SMOL_STEPS
        )
    return out


def smol_base() -> Path:
    """The random-init SmolLM2-135M-shaped folder, built once (scale_models' import takes a minute)."""
    from lorasweep.objectives import cache_root

    folder = cache_root() / "bench-SmolLM2-135M"
    if not (folder / "config.json").is_file():
        from scale_models import build

        build("SmolLM2-135M", folder)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="tiny,smol", help="tiny, smol or both (comma-separated)")
    parser.add_argument("--trials", type=int, default=TRIALS, help="trials of the tiny base's sweep")
    parser.add_argument("--smol-trials", type=int, default=SMOL_TRIALS)
    parser.add_argument("--build-only", action="store_true", help="build the 135M-shaped base and stop")
    args = parser.parse_args()
    if args.build_only:
        print(smol_base())
        return 0
    cores = len(os.sched_getaffinity(0))
    print(f"{cpu_name()}, {cores} cores")
    planned = sweeps(args.shapes.split(","), args.trials, args.smol_trials)
    print(f"before: {uptime()}", flush=True)
    rows = []
    for shape, sweep in planned.items():
        measured = {}
        for workers in (1, cores):  # one process on every core first, then one per core
            measured[workers] = run(sweep, workers)
            print(
                f"  {shape}: {workers} x {cores // workers}: {measured[workers][0]:.1f} s ({uptime()})",
                flush=True,
            )
        for workers, (wall, span, done) in measured.items():
            rows.append((shape, workers, cores // workers, done, wall, span, wall / measured[1][0]))
    print(f"after: {uptime()}\n")
    print("| base | processes x threads | trials | wall s | trials' span s | wall / 1 x N |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shape, workers, threads, done, wall, span, ratio in rows:
        print(f"| {shape} | {workers} x {threads} | {done} | {wall:.1f} | {span:.1f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
