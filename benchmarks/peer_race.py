"""The peer race (issue 18, item 4): whole-process wall time of `lorasweep run` against transformers'
`Trainer.hyperparameter_search` (Optuna backend) doing the same search, alternating, in one run.

    .venv/bin/python benchmarks/peer_race.py [--rounds 3] [--peer-draws-own] [--workers N|auto]
        [--defaults-rounds 1] [--row race|defaults|both]                        (~15 min, 2 cores)

The case: the tiny base, the shipped tone data (lorasweep's stratified 80/20 split of its 1500 rows),
the demo's task and search space, LoRA on all linear layers, 100 steps with 2 evaluations, 4 trials,
TPE seeded with 0, no pruner, the eval loss as the objective. Each round runs both sides once, in
alternating order, each as a whole process in a fresh folder: `lorasweep run race.yaml -q` (its
study and MLflow stores start empty under that folder's mlruns/), and the peer, benchmarks/_peer.py
copied there (transformers + peft + datasets + Optuna, no lorasweep). Target: lorasweep's median
<= 0.8 x the peer's.

What makes it fair, and what does not:
- The objective is eval_loss on both sides: it is what the Trainer's search optimises by default,
  so both sides rank trials by the same number. lorasweep still does what it always does for
  a user, whatever the metric: it scores the base model first, and after each trial it computes
  the exact per-token eval loss and ROUGE/F1 by greedy generation on 64 eval prompts, saves the
  adapter and logs everything to MLflow; at the end it draws the study's plots. That is the
  honest comparison (lorasweep as a user runs it, defaults), so it is raced as it is. The table
  shows what the base evaluation and the generation cost on their own.
- The same trials: lorasweep draws each trial from its own seeded stream, so plain TPE with the
  same seed draws other configurations, and the batch size (8, 16 or 32) alone changes a trial's
  cost four times over. So the peer enqueues the configurations lorasweep drew (the first round's
  lorasweep run goes first; every round draws the same ones) and trains exactly those.
  --peer-draws-own lets the peer's TPE draw for itself instead (then compare the work column).
- The same training: both sides train with lorasweep's defaults (LoRA dropout 0.05, eval batch 32,
  linear schedule, a log every 10 steps) and, as lorasweep does, load the base in fp32 with
  use_cache off; same threads (torch's default), HF_HUB_OFFLINE=1 and OMP_WAIT_POLICY=PASSIVE.
  LoRA dropout is lorasweep's default, not peft's (0.0), and it is not free: on the tiny base a
  Trainer trains about a quarter faster without it, so a peer left on peft's defaults would be
  faster still.
- lorasweep runs as it does by default: `lorasweep run` with no --workers flag, which chooses its
  workers for the machine and the base (the table says how many ran); --workers N races
  `lorasweep run --workers N`. Several workers train several trials at once, each on its share of
  the cores, which the peer's one Trainer cannot do.
- The peer is handed the split as two JSONL files; lorasweep splits the shipped file itself
  (milliseconds, in numpy: the same rows as scikit-learn's train_test_split).
- The peer keeps no adapter and no record: that is what hyperparameter_search gives (a BestRun).
- Unmeasured warm-up first (the libraries imported, lorasweep's cache of library facts filled by
  `lorasweep validate`), so neither side pays a cold disk cache or a first-run cache.

Where lorasweep's time goes is read from the round's own stores, so the breakdown needs no extra
run: the MLflow parent run's start (everything before it: interpreter, imports, data, base model,
stores), the time its base_* metrics were logged (the base model's evaluation), each trial's run
(start, end, and its train_seconds and generate_seconds metrics), the gaps between runs, and the
parent run's end (plots and summary) against the process's end. The peer's come from its timeline
(imports, data, Trainer, each Optuna trial's start and end) and the Trainer's train_runtime lines.
The import costs are measured beside the rounds, in fresh processes: `python -c "import ..."` of
what each side imports (median of 3), and `python -X importtime` of lorasweep's, by package. With
several workers the trials overlap: the in-trial rows are each trial's seconds scaled to the wall
time during which any trial ran, so the columns still add up to the wall time.

The second race (--defaults-rounds, alternating too): each tool with its own defaults for 8 trials
on the same case, each drawing its own configurations: `lorasweep run` of the case's sweep file
without a sampler or pruner line (its defaults: TPE seeded 0, no pruner, its default workers), and
the peer's hyperparameter_search with Optuna's default TPE (unseeded) and no pruner. The figure is
the wall time from each process's launch to the end of the first trial whose eval loss is at most
the peer's best of its 8. Both rank by the same number: the mean NLL per response token over the
eval split (lorasweep's eval_loss; the peer scores each trial's final model that way too, after its
own objective, and that pass's seconds are taken off its clock).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import optuna
from mlflow import MlflowClient
from optuna.storages.journal import JournalFileBackend

from lorasweep.objectives.data import load_rows
from lorasweep.objectives.tiny import ensure_tiny_base
from lorasweep.search import record
from lorasweep.search.sweepfile._sweep import load_sweep

BIN = Path(sys.executable).parent
PEER = Path(__file__).with_name("_peer.py")
ROUNDS = 3
DEFAULTS_ROUNDS = 1  # the second race's rounds: 8 trials a side, about 6 min a round on 2 cores
DEFAULTS_TRIALS = 8
OWN_TARGET = 2.0  # seconds lorasweep may add beyond importing and training (issue 27)
TARGET = 0.8  # lorasweep's median wall time over the peer's
IMPORT_REPS = 3
ENV = {
    **{k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LORASWEEP_STORAGE")},
    "HF_HUB_OFFLINE": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
}
SWEEP = """\
study:
  name: race
  metric: eval_loss              # the Trainer's hyperparameter_search objective
  sampler: {type: tpe, seed: 0}
  n_trials: 4
  pruner: none
model:
  base: tiny
  target_modules: all-linear
data:
  path: builtin:tone
  prompt_template: "Phrase: {phrase}\\nTone:"
  response_template: " {tone}, about the {topic}"
  label_column: tone
  max_length: 64
train:
  max_steps: 100
  eval_steps: 50                 # 2 evaluations
search_space:
  learning_rate: {type: float, low: 1e-5, high: 3e-2, log: true}
  lora_r: {type: choice, values: [2, 4, 8, 16]}
  lora_alpha: {per_rank: {type: choice, values: [1, 2]}}
  batch_size: {type: choice, values: [8, 16, 32]}
"""
# The second race's sweep: the same case with lorasweep's own sampler and pruner (none named).
DEFAULTS_SWEEP = (
    SWEEP.replace("  sampler: {type: tpe, seed: 0}\n", "")
    .replace("  pruner: none\n", "")
    .replace("n_trials: 4", f"n_trials: {DEFAULTS_TRIALS}")
)
# What the peer imports (its first lines), and what a `lorasweep run` imports before its first trial:
# the CLI, then on the way search/launch.py (Optuna, MLflow and its SQLAlchemy store),
# objectives/recipe.py (torch, transformers, peft, datasets) and MLflow's system-metrics monitor.
# rouge-score loads at the first generation, the plots' libraries after the last trial (their own
# rows below).
PEER_IMPORTS = (
    "import datasets, optuna; from peft import LoraConfig, TaskType, get_peft_model; from transformers "
    "import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments"
)
RUN_IMPORTS = (
    "import lorasweep.search.cli, lorasweep.search.api, lorasweep.search.launch, "
    "lorasweep.objectives.recipe, mlflow.store.tracking.sqlalchemy_store, "
    "mlflow.system_metrics.system_metrics_monitor"
)
PLOT_IMPORTS = (
    "import lorasweep.search.report, optuna.visualization, optuna.visualization.matplotlib, "
    "matplotlib.pyplot, plotly.graph_objects"
)
# For `-X importtime`, by package: the libraries both sides load first, so that each library after
# them is charged only what it adds.
TRACED_IMPORTS = (
    "import torch, transformers; from transformers import Trainer; import peft, datasets, optuna; "
    "import rouge_score.rouge_scorer, mlflow, "
    f"mlflow.store.tracking.sqlalchemy_store; {RUN_IMPORTS}; {PLOT_IMPORTS}"
)
# Creating the MLflow store of a fresh folder (its schema migrations), after MLflow is imported.
FRESH_STORE = (
    "import sys, time; from mlflow import MlflowClient; import mlflow.store.tracking.sqlalchemy_store; "
    "t = time.perf_counter(); c = MlflowClient('sqlite:///' + sys.argv[1]); c.create_experiment('x'); "
    "print(time.perf_counter() - t)"
)


def run(command: list[str], folder: Path) -> tuple[float, float, float, str]:
    """Run a whole process in `folder`: (epoch launched, epoch ended, wall seconds, its stdout)."""
    launched, start = time.time(), time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=ENV, capture_output=True, text=True, check=False)
    wall, ended = time.perf_counter() - start, time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return launched, ended, wall, done.stdout


def gaps(spans: list[tuple[float, float]]) -> float:
    """Seconds between consecutive (start, end) spans."""
    return sum(later[0] - earlier[1] for earlier, later in itertools.pairwise(spans))


# -- the two sides -------------------------------------------------------------------------------
def union(spans: list[tuple[float, float]]) -> float:
    """Seconds during which at least one of the (start, end) spans ran."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


def race_lorasweep(folder: Path, workers: str | None, sweep: str = SWEEP) -> dict:
    """`lorasweep run` in a fresh folder; its wall time, and its phases read from its own stores."""
    (folder / "race.yaml").write_text(sweep)
    command = [str(BIN / "lorasweep"), "run", "race.yaml", "-q", *(["--workers", workers] if workers else [])]
    launched, ended, wall, _ = run(command, folder)
    client = MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    parent = next(r for r in runs if r.data.tags.get(record.ROLE_TAG) == "study")
    trials = sorted(
        (r for r in runs if r.data.tags.get(record.ROLE_TAG) == "trial" and r.info.end_time),
        key=lambda r: r.info.start_time,
    )
    opened, closed = parent.info.start_time / 1000, parent.info.end_time / 1000
    # The base model's scores: logged once scored (or taken from the cache of an earlier study).
    base_logged = client.get_metric_history(parent.info.run_id, "base_eval_loss")
    scored = min(base_logged[0].timestamp / 1000, trials[0].info.start_time / 1000) if base_logged else opened
    spans = [(r.info.start_time / 1000, r.info.end_time / 1000) for r in trials]
    train = sum(r.data.metrics.get("train_seconds", 0.0) for r in trials)
    generate = sum(r.data.metrics.get("generate_seconds", 0.0) for r in trials)
    in_trials = sum(end - start for start, end in spans)
    busy = union(spans)
    overlap = busy / in_trials if in_trials else 1.0  # 1 with one worker; below with trials in parallel
    study = optuna.load_study(
        study_name="race",
        storage=optuna.storages.JournalStorage(JournalFileBackend(str(folder / "mlruns" / "optuna.journal"))),
    )
    ordered = sorted(study.trials, key=lambda t: t.number)
    last_end = max(end for _, end in spans)
    return {
        "wall": wall,
        "configs": [t.params for t in ordered],
        "workers": len({record.TrialRecord.of(t).worker for t in ordered} - {None}),
        # (seconds from launch to the trial's end, its eval loss), for the second race
        "finished": sorted(
            (r.info.end_time / 1000 - launched, r.data.metrics["eval_loss"])
            for r in trials
            if "eval_loss" in r.data.metrics and r.info.status == "FINISHED"
        ),
        "phases": {
            "start": opened - launched,
            "base": scored - opened,
            "train": train * overlap,
            "generate": generate * overlap,
            "trial_rest": (in_trials - train - generate) * overlap,
            "between": (min(start for start, _ in spans) - scored)
            + (last_end - min(s for s, _ in spans))
            - busy,
            "end": closed - last_end,
            "exit": ended - closed,
        },
        "train_wall": train * overlap,
    }


def race_peer(
    folder: Path, base: Path, split: Path, configs: list[dict] | None, own_defaults: bool = False
) -> dict:
    """The peer script, copied into a fresh folder and run there; its wall time and phases."""
    shutil.copy(PEER, folder / "peer.py")
    command = [sys.executable, "peer.py", "--base", str(base), "--out", str(folder / "trainer")]
    command += ["--train", str(split / "train.jsonl"), "--eval", str(split / "eval.jsonl")]
    command += ["--timeline", "timeline.json"]
    if own_defaults:
        command += ["--own-defaults", "--exact-loss", "--n-trials", str(DEFAULTS_TRIALS)]
    if configs is not None:
        (folder / "configs.json").write_text(json.dumps(configs))
        command += ["--configs", "configs.json"]
    launched, ended, wall, stdout = run(command, folder)
    line = json.loads((folder / "timeline.json").read_text())
    spans = [(t["start"], t["end"]) for t in line["trials"]]
    train = sum(float(s) for s in re.findall(r"'train_runtime': '([\d.]+)'", stdout))
    scoring = 0.0  # the per-token pass of --exact-loss: not the peer's own work, off its clock
    finished = []
    for t in line["trials"]:
        scoring += t.get("exact_seconds", 0.0)
        if "exact_loss" in t:
            finished.append((t["end"] - launched - scoring, t["exact_loss"]))
    return {
        "wall": wall - scoring,
        "configs": [t["params"] for t in line["trials"]],
        "finished": finished,
        "train_wall": train,
        "phases": {
            "start": line["trainer_ready"] - launched,
            "imports": line["imported"] - launched,
            "base": 0.0,
            "train": train,
            "generate": 0.0,
            "trial_rest": sum(end - start for start, end in spans) - train - scoring,
            "between": spans[0][0] - line["trainer_ready"] + gaps(spans),
            "end": 0.0,
            "exit": ended - spans[-1][1],
        },
    }


# -- what the imports cost -----------------------------------------------------------------------
def import_costs(scratch: Path) -> dict:
    """Wall seconds of fresh processes that only import (median of IMPORT_REPS, interleaved), the
    creation of a fresh MLflow store, and lorasweep's imports by package (`-X importtime`)."""
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import lorasweep.search.cli": [sys.executable, "-c", "import lorasweep.search.cli"],
        "the peer's imports": [sys.executable, "-c", PEER_IMPORTS],
        "a lorasweep run's imports before its first trial": [sys.executable, "-c", RUN_IMPORTS],
        "the same, and the plots' (loaded after the last trial)": [
            sys.executable,
            "-c",
            f"{RUN_IMPORTS}; {PLOT_IMPORTS}",
        ],
    }
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    stores = []
    for rep in range(IMPORT_REPS):
        for name, command in commands.items():
            seconds[name].append(run(command, scratch)[2])
        store = scratch / f"store-{rep}" / "mlflow.db"
        store.parent.mkdir()
        stores.append(float(run([sys.executable, "-c", FRESH_STORE, str(store)], scratch)[3]))
    costs = {name: statistics.median(values) for name, values in seconds.items()}
    costs["a fresh MLflow store's schema (in a process that imported MLflow)"] = statistics.median(stores)
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", TRACED_IMPORTS],
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    by_package: dict[str, float] = {}
    for match in re.finditer(r"^import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", traced, re.MULTILINE):
        package = match.group(2).split(".")[0]  # top-level lines only: nested ones are indented
        by_package[package] = by_package.get(package, 0.0) + int(match.group(1)) / 1e6
    return {"seconds": costs, "by_package": by_package}


# -- the table -----------------------------------------------------------------------------------
PHASES = {
    "start": "process start to first trial (imports, data, base model, stores)",
    "base": "base model evaluation (loss + generation)",
    "train": "training (Trainer.train: 100 steps, 2 evaluations)",
    "generate": "generation for ROUGE/F1 after each trial",
    "trial_rest": "rest of the trials (lorasweep: final loss pass, adapter, MLflow; peer: model_init)",
    "between": "before and between trials (sampler, study storage; several workers: their processes "
    "starting)",
    "end": "after the last trial: summary (and plots, where drawn before the parent run closes)",
    "exit": "after the parent run closed: the result line, plots drawn after it, process exit",
}
SHARED = {"torch", "transformers", "peft", "datasets", "optuna"}  # what the peer imports too


def median_phase(results: list[dict], key: str) -> float:
    return statistics.median(r["phases"][key] for r in results)


def machine_line() -> str:
    load = os.getloadavg()
    machine = platform.processor() or platform.machine()
    return f"{os.cpu_count()} CPUs ({machine}), load average {load[0]:.1f} now, {load[2]:.1f} over 15 min"


def workers_text(flag: str | None, results: list[dict]) -> str:
    ran = sorted({r["workers"] for r in results})
    how = f"--workers {flag}" if flag else "its default workers (no --workers flag)"
    return f"lorasweep run with {how}: {'/'.join(map(str, ran))} worker process(es) ran its trials"


def report(
    results: dict[str, list[dict]], imports: dict, order: list[tuple[str, str]], flag: str | None
) -> None:
    ours, peers = results["lorasweep"], results["peer"]
    mine, theirs = statistics.median(r["wall"] for r in ours), statistics.median(r["wall"] for r in peers)
    ratio = mine / theirs
    print(f"\n{machine_line()}")
    print(workers_text(flag, ours))
    alternation = ", ".join("/".join(o) for o in order)
    print(f"{len(ours)} rounds, alternating ({alternation}); wall seconds of the whole process\n")
    print("| round | lorasweep run | peer (Trainer.hyperparameter_search) | lorasweep / peer |")
    print("| --- | --- | --- | --- |")
    for n, (a, b) in enumerate(zip(ours, peers, strict=True), start=1):
        print(f"| {n} | {a['wall']:.1f} | {b['wall']:.1f} | {a['wall'] / b['wall']:.2f} |")
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"| median | {mine:.1f} | {theirs:.1f} | **{ratio:.2f}** (target <= {TARGET}: {verdict}) |")

    rounds = range(len(ours))
    print("\nWhere the time goes, seconds (L: lorasweep, P: peer; each column adds up to its wall time):\n")
    print("| phase | " + " | ".join(f"L{n + 1} | P{n + 1}" for n in rounds) + " | median L - P |")
    print("| --- |" + " --- | --- |" * len(ours) + " --- |")
    for key, label in PHASES.items():
        cells = " | ".join(f"{ours[n]['phases'][key]:.1f} | {peers[n]['phases'][key]:.1f}" for n in rounds)
        extra = median_phase(ours, key) - median_phase(peers, key)
        print(f"| {label} | {cells} | {extra:+.1f} |")
    cells = " | ".join(f"{ours[n]['wall']:.1f} | {peers[n]['wall']:.1f}" for n in rounds)
    print(f"| wall | {cells} | {mine - theirs:+.1f} |")
    without = statistics.median(r["wall"] - r["phases"]["base"] - r["phases"]["generate"] for r in ours)
    print(
        f"\nlorasweep less its base evaluation and generation (what the peer does not do): "
        f"{without:.1f} s, {without / theirs:.2f} x the peer"
    )
    peer_imports = median_phase(peers, "imports")
    print(f"the peer's process start to its imports done: {peer_imports:.1f} s (median)")
    # Beyond importing and training: each side's wall time less its imports (the peer's as timed in
    # its process, lorasweep's as a fresh process that imports what a run does takes) and less its
    # training (Trainer.train, its evaluations included; with several workers, on the wall clock).
    run_imports = imports["seconds"]["a lorasweep run's imports before its first trial"]
    own = statistics.median(r["wall"] - r["train_wall"] for r in ours) - run_imports
    peer_own = statistics.median(r["wall"] - r["train_wall"] for r in peers) - peer_imports
    verdict = "met" if own - peer_own <= OWN_TARGET else "MISSED"
    print(
        f"beyond importing and training: lorasweep {own:.1f} s, peer {peer_own:.1f} s, lorasweep adds "
        f"{own - peer_own:+.1f} s (target <= {OWN_TARGET:.0f} s: {verdict})"
    )

    print(f"\nImports and the MLflow store, in fresh processes (median of {IMPORT_REPS}, wall seconds):\n")
    print("| what | seconds |")
    print("| --- | --- |")
    for name, value in imports["seconds"].items():
        print(f"| {name} | {value:.2f} |")
    seconds = imports["seconds"]
    extra = seconds["a lorasweep run's imports before its first trial"] - seconds["the peer's imports"]
    print(f"| a run's imports before its first trial, beyond the peer's | {extra:+.2f} |")
    ranked = sorted(imports["by_package"].items(), key=lambda kv: -kv[1])
    print("\n`python -X importtime` of all of a run's imports, the peer's libraries first, by package (s):")
    print("  " + ", ".join(f"{p} {s:.2f}" for p, s in ranked if s >= 0.02))
    print(
        f"  the peer's libraries {sum(s for p, s in ranked if p in SHARED):.2f} s; lorasweep and the "
        f"libraries only it loads {sum(s for p, s in ranked if p not in SHARED):.2f} s"
    )

    work = {
        side: [sum(c["batch_size"] for c in r["configs"]) * 100 for r in rs] for side, rs in results.items()
    }
    if any(r["workers"] > 1 for r in ours):
        print(
            "\n(several workers: the in-trial rows are the trials' seconds scaled to the wall time "
            "during which any trial ran)"
        )
    print(f"\ntraining examples per sweep (the work): lorasweep {work['lorasweep']}, peer {work['peer']}")
    print(f"configurations: lorasweep {ours[0]['configs']}")
    if peers[0]["configs"] != ours[0]["configs"]:
        print(f"                peer      {peers[0]['configs']}")


def race_defaults(scratch: Path, base: Path, split: Path, rounds: int, flag: str | None) -> None:
    """The second race: each tool with its own defaults, 8 trials, each drawing its own; the wall
    time to the first trial as good as the peer's best."""
    results: dict[str, list[dict]] = {"lorasweep": [], "peer": []}
    for n in range(rounds):
        sides = ("peer", "lorasweep") if n % 2 == 0 else ("lorasweep", "peer")
        for side in sides:
            with tempfile.TemporaryDirectory(prefix=f"defaults{n}-{side}-", dir=scratch) as folder:
                if side == "lorasweep":
                    result = race_lorasweep(Path(folder), flag, DEFAULTS_SWEEP)
                else:
                    result = race_peer(Path(folder), base, split, None, own_defaults=True)
            results[side].append(result)
            print(f"defaults round {n + 1} {side}: {result['wall']:.1f} s", flush=True)

    print(f"\n{machine_line()}")
    print(workers_text(flag, results["lorasweep"]))
    print(
        f"Each tool's own defaults, {DEFAULTS_TRIALS} trials, each drawing its own configurations; {rounds} "
        "round(s), alternating. Seconds from launch to the end of the first trial whose eval loss "
        "(per response token) is at most the peer's best of the round:\n"
    )
    print(
        "| round | peer's best eval loss | lorasweep: to reach it | peer: to reach it | lorasweep / peer "
        "| lorasweep's best | wall: lorasweep / peer |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ratios = []
    for n, (ours, peer) in enumerate(zip(results["lorasweep"], results["peer"], strict=True), start=1):
        target = min(loss for _, loss in peer["finished"])
        peer_at = next(t for t, loss in peer["finished"] if loss <= target)
        reached = [t for t, loss in ours["finished"] if loss <= target]
        best = min(loss for _, loss in ours["finished"])
        if reached:
            ratios.append(reached[0] / peer_at)
            cells = f"{reached[0]:.1f} s | {peer_at:.1f} s | {reached[0] / peer_at:.2f}"
        else:
            cells = f"not reached in {DEFAULTS_TRIALS} trials | {peer_at:.1f} s | -"
        print(f"| {n} | {target:.4f} | {cells} | {best:.4f} | {ours['wall']:.1f} / {peer['wall']:.1f} s |")
    if ratios:
        print(f"| median | | | | **{statistics.median(ratios):.2f}** | | |")
    for side, rs in results.items():
        print(f"{side} configurations, round 1: {rs[0]['configs']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--defaults-rounds", type=int, default=DEFAULTS_ROUNDS)
    parser.add_argument("--row", choices=("race", "defaults", "both"), default="both")
    parser.add_argument("--peer-draws-own", action="store_true", help="the peer's TPE draws its own trials")
    parser.add_argument(
        "--workers", help="lorasweep run --workers N or auto (default: no flag, lorasweep's own default)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lorasweep-peer-race-") as scratch_name:
        scratch = Path(scratch_name)
        # The base's folder for the peer, and lorasweep's own split of the shipped data, as files.
        base = ensure_tiny_base()
        (scratch / "race.yaml").write_text(SWEEP)
        train, eval_ = load_rows(load_sweep(scratch / "race.yaml").data)
        split = scratch / "split"
        split.mkdir()
        train.to_json(split / "train.jsonl")
        eval_.to_json(split / "eval.jsonl")
        # Warm-up, unmeasured: the libraries read from disk once, lorasweep's cache of library facts.
        run([str(BIN / "lorasweep"), "validate", "race.yaml"], scratch)
        run([sys.executable, "-c", TRACED_IMPORTS], scratch)

        if args.row in ("race", "both"):
            race(scratch, base, split, args)
        if args.row in ("defaults", "both") and args.defaults_rounds > 0:
            print()
            race_defaults(scratch, base, split, args.defaults_rounds, args.workers)
    return 0


def race(scratch: Path, base: Path, split: Path, args: argparse.Namespace) -> None:
    """The first race: the same 4 trials on both sides, whole processes, alternating."""
    imports = import_costs(scratch)
    results: dict[str, list[dict]] = {"lorasweep": [], "peer": []}
    configs: list[dict] | None = None
    order = []
    for n in range(args.rounds):
        sides = ("lorasweep", "peer") if n % 2 == 0 else ("peer", "lorasweep")
        order.append(sides)
        for side in sides:
            with tempfile.TemporaryDirectory(prefix=f"round{n}-{side}-", dir=scratch) as folder:
                if side == "lorasweep":
                    result = race_lorasweep(Path(folder), args.workers)
                    if configs is not None and result["configs"] != configs:
                        print(f"note: round {n + 1}'s lorasweep drew other trials: {result['configs']}")
                    configs = configs or result["configs"]
                else:
                    result = race_peer(Path(folder), base, split, None if args.peer_draws_own else configs)
            results[side].append(result)
            print(f"round {n + 1} {side}: {result['wall']:.1f} s", flush=True)
    report(results, imports, order, args.workers)


if __name__ == "__main__":
    sys.exit(main())
