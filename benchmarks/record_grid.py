"""Record the demo's search space on a grid, each configuration trained once for real: the table that
the search-efficiency benchmark (item c of benchmarks/bench.py) replays.

    .venv/bin/python benchmarks/record_grid.py [SWEEP GRID]   (make bench-grid; about 90 min on 2 cores)
    .venv/bin/python benchmarks/record_grid.py --lr-range SWEEP OUT   (the range test alone: seconds)

With no arguments it records spaces/demo.yaml into benchmarks/demo_grid.json; `make bench-grid-phrase`
records the second table, spaces/phrase.yaml into benchmarks/phrase_grid.json (about 30 min).

Both sweeps search learning_rate (log-uniform), lora_r, the alpha-per-rank factor and batch_size.
The learning rate is cut into LR_CELLS cells of equal width in log space; each configuration is
(cell, r, k, batch) and trains at the cell's centre through objectives.Recipe with the sweep's own
settings (the demo: 100 steps, an evaluation every 20) and one seed. For each, the table keeps the eval
perplexity the Trainer reported at every evaluation (what the pruner sees), the final exact eval
perplexity and generation metrics (what the trial returns), and the seconds and tokens it took.

Two processes of one torch thread each share the configurations: on 2 cores that is the fastest
split, and the thread count does not change what is recorded beyond float rounding.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import product
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
GRID = Path(__file__).with_name("demo_grid.json")
SWEEP = ROOT / "spaces" / "demo.yaml"
LR_CELLS = 8
SEED = 0
PROCESSES = 2

_worker = None  # one objectives.Recipe per process: the base model and the data loaded once


def lr_cells(low: float, high: float, cells: int = LR_CELLS) -> list[tuple[float, float, float]]:
    """(lower edge, centre, upper edge) of each cell, equal widths in log space."""
    a, b = math.log10(low), math.log10(high)
    width = (b - a) / cells
    return [
        (10 ** (a + i * width), 10 ** (a + (i + 0.5) * width), 10 ** (a + (i + 1) * width))
        for i in range(cells)
    ]


def configurations(sweep_path: Path) -> list[dict]:
    from lorasweep.search import load_sweep

    space = load_sweep(sweep_path).space.distributions
    lr = space["learning_rate"]
    return [
        {"lr_cell": i, "learning_rate": centre, "lora_r": r, "lora_alpha_per_rank": k, "batch_size": b}
        for (i, (_, centre, _)), r, k, b in product(
            enumerate(lr_cells(lr.low, lr.high)),
            space["lora_r"].choices,
            space["lora_alpha_per_rank"].choices,
            space["batch_size"].choices,
        )
    ]


def _start(sweep_path: Path) -> None:
    import torch

    from lorasweep.objectives import Recipe
    from lorasweep.search import load_sweep
    from lorasweep.search.cli import _quiet_libraries

    global _worker
    torch.set_num_threads(1)
    _quiet_libraries(debug=False)
    sweep = load_sweep(sweep_path)
    _worker = (Recipe(sweep.model, sweep.data, sweep.eval), sweep)


def _record(config: dict) -> dict:
    from lorasweep.objectives import trial_spec

    worker, sweep = _worker
    sampled = {k: v for k, v in config.items() if k != "lr_cell"}
    spec = trial_spec(sweep.space.resolve(sampled, sweep.fixed), SEED)
    curve: dict[int, float] = {}

    def on_curve(step: int, metrics: dict[str, float]) -> None:
        if "eval_perplexity" in metrics:
            curve[step] = metrics["eval_perplexity"]

    entry = {**config, "curve": curve}
    with tempfile.TemporaryDirectory(prefix="lorasweep-grid-") as folder:
        try:
            result = worker.run_trial(spec, Path(folder), on_curve)
        except FloatingPointError as e:  # the trial diverged: it fails at that step, as in a sweep
            return {**entry, "failed": str(e), "steps": max(curve, default=0)}
    return {
        **entry,
        "metrics": result.metrics,
        "steps": result.steps,
        "train_seconds": round(result.train_seconds, 3),
        "tokens": result.tokens,
    }


def record_lr_range(sweep_path: Path, out: Path) -> dict:
    """`--lr-range SWEEP OUT`: the learning-rate range test that `study.lr_range_test` runs before a
    study's first trial, run once for real with the sweep file's settings (search._lr_range.range_spec),
    its (lr, smoothed loss) curve kept for the replay (benchmarks/_below_floor.py)."""
    import torch

    from lorasweep.objectives import Recipe
    from lorasweep.search import load_sweep
    from lorasweep.search._lr_range import narrow, range_spec
    from lorasweep.search.cli import _quiet_libraries

    torch.set_num_threads(1)
    _quiet_libraries(debug=False)
    sweep = load_sweep(sweep_path)
    spec = range_spec(sweep)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lorasweep-lr-range-") as folder:
        points = Recipe(sweep.model, sweep.data, sweep.eval).lr_range_test(spec, Path(folder))
    record = {
        "about": f"benchmarks/record_grid.py --lr-range: {sweep_path.relative_to(ROOT)}'s learning-rate "
        "range test (study.lr_range_test), run once for real; replayed by benchmarks/_below_floor.py",
        "sweep_file": str(sweep_path.relative_to(ROOT)),
        "low": spec.low,
        "high": spec.high,
        "planned_steps": spec.steps,
        "steps": len(points),  # what the test cost: it stops early once the loss blows up
        "trial": {"training_args": spec.trial.training_args, "lora_args": spec.trial.lora_args},
        "seed": spec.trial.seed,
        "narrowed": narrow(points, spec.low, spec.high),
        "seconds": round(time.monotonic() - started, 1),
        "curve": [[lr, loss] for lr, loss in points],
    }
    out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(points)} steps, narrowed to {record['narrowed']}")
    return record


def main(argv: list[str]) -> int:
    if argv[:1] == ["--lr-range"]:
        record_lr_range(Path(argv[1]).resolve(), Path(argv[2]))
        return 0
    import peft
    import torch
    import transformers

    sweep_path, grid = (Path(argv[0]).resolve(), Path(argv[1])) if argv else (SWEEP, GRID)
    configs = configurations(sweep_path)
    print(f"recording {len(configs)} configurations into {grid} ({PROCESSES} processes)", flush=True)
    started = time.monotonic()
    entries = []
    with ProcessPoolExecutor(
        PROCESSES,
        mp_context=__import__("multiprocessing").get_context("spawn"),
        initializer=_start,
        initargs=(sweep_path,),
    ) as pool:
        for n, entry in enumerate(pool.map(_record, configs), start=1):
            entries.append(entry)
            final = entry.get("metrics", {}).get("eval_perplexity")
            print(
                f"{n:>4}/{len(configs)}  {json.dumps({k: entry[k] for k in configs[0]})}  "
                f"final eval_perplexity={final}",
                flush=True,
            )
    seconds = time.monotonic() - started
    table = {
        "about": f"benchmarks/record_grid.py: {sweep_path.relative_to(ROOT)}'s search space on a grid, "
        "each configuration trained once (objectives.Recipe); replayed by benchmarks/bench.py, item (c)",
        "sweep_file": str(sweep_path.relative_to(ROOT)),
        "sweep": sweep_path.read_text(encoding="utf-8"),
        "lr_cells": [list(cell) for cell in lr_cells(*_lr_range(sweep_path))],
        "seed": SEED,
        "recorded": {
            "seconds": round(seconds),
            "processes": PROCESSES,
            "torch_threads_per_process": 1,
            "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        "entries": entries,
    }
    grid.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {grid}: {len(entries)} configurations in {seconds / 60:.1f} min")
    return 0


def _lr_range(sweep_path: Path) -> tuple[float, float]:
    from lorasweep.search import load_sweep

    lr = load_sweep(sweep_path).space.distributions["learning_rate"]
    return lr.low, lr.high


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
