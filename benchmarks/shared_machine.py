"""A demo trial on a machine it shares: quiet, and beside one busy process, with OpenMP's threads
waiting as lorasweep chooses (passively on a busy machine, OpenMP's spin on a quiet one), as OpenMP's
default leaves them (they spin), and always passively.

    .venv/bin/python benchmarks/shared_machine.py [--runs N] [--policies lorasweep,default,passive]
    (or: make bench-shared; about 10 min on 2 cores with the default 2 runs)

Each run is a fresh `lorasweep run spaces/demo.yaml --trials 1` in a temporary folder, and the figure
is trial 0's own time (Optuna's start to end: sampling, training, evaluation, generation, logging;
not the imports or the base model's scores before it). The competing process is a Python busy loop,
one per machine, unpinned: the scheduler places it, as it would another user's job.

The wait policies, each given to lorasweep the way a user would (lorasweep keeps a user's own):
- lorasweep: nothing set, so lorasweep chooses (search/threads.py): PASSIVE when other programs
  keep half a core busy as the sweep starts, OpenMP's default otherwise;
- default: GOMP_SPINCOUNT=300000, GNU OpenMP's own spin when nothing is set (what lorasweep ran
  with before); a variable the user set, so lorasweep leaves the wait alone;
- passive: OMP_WAIT_POLICY=PASSIVE whatever the machine does;
- active: OMP_WAIT_POLICY=ACTIVE, threads that never stop spinning;
- short: GOMP_SPINCOUNT=10000, a spin 1/30 of the default's;
- one-thread: OMP_NUM_THREADS=1, no thread to wait for (lorasweep then chooses the wait too).
Conditions and policies take turns within each round, so a change of load hits them all alike.
`uptime`'s load average is printed before and after. Target: beside the busy process, a trial
takes at most 2x its quiet time with lorasweep's choice.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml

from lorasweep.search.storage import load_study

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "spaces" / "demo.yaml"
# A policy -> the variables the user sets (the rest of the wait settings are removed).
POLICIES = {
    "lorasweep": {},
    "default": {"GOMP_SPINCOUNT": "300000"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    "short": {"GOMP_SPINCOUNT": "10000"},  # a spin 1/30 of the default's, then sleep
    "one-thread": {"OMP_NUM_THREADS": "1"},  # one OpenMP thread: nothing to wait for
}
POLICY_NAMES = {
    "lorasweep": "lorasweep's choice",
    "default": "OpenMP's default spin",
    "passive": "always PASSIVE",
    "active": "ACTIVE",
    "short": "a short spin (GOMP_SPINCOUNT=10000)",
    "one-thread": "one thread (OMP_NUM_THREADS=1)",
}
WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS")
TARGET = 2.0


def trial_seconds(policy: str, quick: bool = False) -> float:
    """One `lorasweep run` of the demo's first trial in a fresh folder: trial 0's seconds. `quick`:
    10 steps and 8 generations, to check that this script runs, not to measure."""
    env = {k: v for k, v in os.environ.items() if k not in WAIT_SETTINGS}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **POLICIES[policy]}
    lorasweep = [sys.executable, "-m", "lorasweep.search"]
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as folder:
        sweep = DEMO
        if quick:
            demo = yaml.safe_load(DEMO.read_text())
            demo["train"] |= {"max_steps": 10, "eval_steps": 10}
            demo["eval"] |= {"max_samples": 8}
            sweep = Path(folder) / "demo.yaml"
            sweep.write_text(yaml.safe_dump(demo))
        subprocess.run(
            [*lorasweep, "-q", "run", str(sweep), "--trials", "1", "--workers", "1"],
            cwd=folder,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        trial = load_study("demo", f"{folder}/mlruns/optuna.journal").trials[0]
        assert trial.datetime_start and trial.datetime_complete, trial.state
        return (trial.datetime_complete - trial.datetime_start).total_seconds()


def busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="timed runs per condition and policy (default 2)")
    parser.add_argument(
        "--policies",
        default="lorasweep,default,passive",
        help=f"comma-separated, from {', '.join(POLICIES)} (default: lorasweep,default,passive)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="10-step trials: checks the script, measures nothing"
    )
    args = parser.parse_args()
    policies = args.policies.split(",")
    unknown = set(policies) - set(POLICIES)
    if unknown:
        parser.error(f"--policies must name {', '.join(POLICIES)}, but got {', '.join(sorted(unknown))}")
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    print(f"before: {uptime()}")
    print(f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; {args.runs} runs each", flush=True)
    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.runs):
        for condition in ("quiet", "one busy process") if round_ % 2 == 0 else ("one busy process", "quiet"):
            competitor = busy_loop() if condition != "quiet" else None
            try:
                for policy in policies if round_ % 2 == 0 else policies[::-1]:
                    seconds = trial_seconds(policy, args.quick)
                    times.setdefault((condition, policy), []).append(seconds)
                    print(f"  round {round_ + 1}: {condition}, {policy}: {seconds:.1f} s", flush=True)
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
    print(f"after: {uptime()}")

    print()
    quiet_spin = statistics.median(times[("quiet", "default")]) if ("quiet", "default") in times else None
    print(
        "| condition | OpenMP wait | trial 0, s: median (min-max) | / quiet, same wait "
        "| / quiet, default spin |"
    )
    print("| --- | --- | --- | --- | --- |")
    for condition in ("quiet", "one busy process"):
        for policy in policies:
            values = times[(condition, policy)]
            median = statistics.median(values)
            same = median / statistics.median(times[("quiet", policy)])
            spin = f"{median / quiet_spin:.2f}x" if quiet_spin else "-"
            print(
                f"| {condition} | {POLICY_NAMES[policy]} | {median:.1f} "
                f"({min(values):.1f}-{max(values):.1f}) | {same:.2f}x | {spin} |"
            )
    if "lorasweep" in policies:
        ratio = statistics.median(times[("one busy process", "lorasweep")]) / statistics.median(
            times[("quiet", "lorasweep")]
        )
        verdict = "met" if ratio <= TARGET else "MISSED"
        print(
            f"\nbeside a busy process, lorasweep's choice: {ratio:.2f}x its quiet time "
            f"(target <= {TARGET:g}x): {verdict}"
        )


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f"{(time.monotonic() - start) / 60:.1f} min in all")
