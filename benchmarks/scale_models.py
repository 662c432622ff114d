"""`make bench-scale`: what a trial costs, and lorasweep's share of it, at real sizes.

Random-init models with the published shapes of SmolLM2-135M and Qwen2.5-0.5B (layers, hidden size,
heads, KV heads, intermediate size, vocabulary, tied embeddings: their config.json), saved as local
folders with the tiny base's tokenizer (the hub is out of reach; the shapes set the cost, not the
weights). For each, in one process, on this machine:

- a real sweep (journal storage, MLflow on SQLite) of 1 + REPS trials, the first a warm-up, through
  benchmarks/_trials.Paired: each lorasweep trial beside the same trial as a plain Trainer script and
  the same batches through a bare PyTorch + peft loop, alternating which goes first. Reported: the
  training throughput of each (tokens/s, evaluations excluded) and lorasweep's over the bare loop's
  (target >= 0.95), lorasweep's own seconds per trial (its trial minus the Trainer script's) and
  their share of the trial (medians over the REPS measured trials), the process's peak RSS (it holds
  the base twice: lorasweep's worker's and the bare side's), the base load (once per worker: the base
  and the data), the adapter's size and the time MLflow takes to log it;
- the trial's ONNX exports (fp32 by Model Builder, int8 and int4 by Olive), each one's time and
  size, the parity gate's time, and ms/token of PyTorch and of each export (greedy, batch 1).

Short runs (STEPS optimiser steps): these are rates. About 15 min on 2 CPU cores.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from statistics import median

import mlflow
import optuna
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from _trials import Paired
from lorasweep.objectives import Recipe, eval_inputs, load_trial_model
from lorasweep.objectives.tiny import ensure_tiny_base
from lorasweep.search import RunOptions, load_sweep, run_sweep
from lorasweep.search.handover import Limits, Measured, TorchLM, export_fp32, measure, quantize

# The published config.json of each (hub ids HuggingFaceTB/SmolLM2-135M and Qwen/Qwen2.5-0.5B).
SHAPES = {
    "SmolLM2-135M": (
        "llama",
        {
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "vocab_size": 49152,
            "max_position_embeddings": 8192,
            "rope_theta": 100000.0,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": True,
        },
    ),
    "Qwen2.5-0.5B": (
        "qwen2",
        {
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "max_position_embeddings": 32768,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
        },
    ),
}
STEPS = {"SmolLM2-135M": 8, "Qwen2.5-0.5B": 4}  # optimiser steps per trial, batches of 8 rows
REPS = 3  # measured trials per shape, after a warm-up one

SWEEP = """\
study: {{name: scale, metric: f1, sampler: {{type: tpe, seed: 0}}, n_trials: {trials}}}
model: {{base: {base}, target_modules: all-linear}}
data: {{max_length: 64, train_split: "train[:400]", eval_split: "train[1400:1416]"}}
train:
  max_steps: {steps}
  eval_steps: {steps}
  logging_steps: {steps}
  per_device_train_batch_size: 8
  per_device_eval_batch_size: 16
  warmup_steps: 0
  r: 8
  lora_alpha: 16
eval: {{max_samples: 4, max_new_tokens: 8, batch_size: 4}}
search_space:
  learning_rate: {{type: float, low: 1e-4, high: 1e-3, log: true}}
"""


def build(name: str, folder: Path) -> Path:
    kind, shape = SHAPES[name]
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_base())
    ids = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **shape, **ids)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def measure_shape(name: str, root: Path) -> dict[str, object]:
    base = build(name, root / name)
    path = root / f"{name}.yaml"
    path.write_text(SWEEP.format(base=base, steps=STEPS[name], trials=REPS + 1), encoding="utf-8")
    sweep = load_sweep(path)
    loading = time.perf_counter()
    worker = Recipe(sweep.model, sweep.data, sweep.eval)
    figures: dict[str, object] = {"load_seconds": time.perf_counter() - loading, "steps": STEPS[name]}
    figures["params"] = sum(p.numel() for p in worker.base.parameters())
    bare_base = AutoModelForCausalLM.from_pretrained(base)
    bare_base.config.use_cache = False  # as lorasweep trains
    paired = Paired(worker, bare_base, sweep.model.target_modules)
    journal, tracking = root / f"{name}.journal", f"sqlite:///{root}/{name}.db"
    options = RunOptions(quiet=True, plots=False, storage=f"journal:///{journal}", tracking_uri=tracking)
    run_sweep(sweep, options, log=lambda _line: None, runner=paired)
    pairs = paired.pairs[1:]  # the first is the warm-up
    figures["ratios"] = [p.result.tokens_per_second / (p.loop.tokens / p.loop.seconds) for p in pairs]
    figures["ratio"] = median(figures["ratios"])
    figures["trial_tps"] = median(p.result.tokens_per_second for p in pairs)
    figures["loop_tps"] = median(p.loop.tokens / p.loop.seconds for p in pairs)
    figures["trial_seconds"] = median(p.lorasweep_seconds for p in pairs)
    figures["own_seconds"] = median(p.lorasweep_seconds - p.bare.seconds for p in pairs)
    figures["peak_rss_mb"] = max(p.result.peak_rss_mb for p in pairs)
    del worker, paired, bare_base
    gc.collect()

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    run_id = optuna.load_study(study_name="scale", storage=storage).trials[-1].user_attrs["mlflow_run_id"]
    client = mlflow.MlflowClient(tracking)
    adapter = Path(client.download_artifacts(run_id, "adapter", str(root / f"{name}-adapter")))
    figures["adapter_mb"] = sum(f.stat().st_size for f in adapter.rglob("*") if f.is_file()) / 2**20
    experiment = client.get_run(run_id).info.experiment_id
    logging = time.perf_counter()
    client.log_artifacts(client.create_run(experiment).info.run_id, str(adapter), "adapter")
    figures["log_seconds"] = time.perf_counter() - logging

    scratch = root / f"{name}-scratch"
    scratch.mkdir()
    handed = load_trial_model(sweep.model, adapter, scratch)
    exports = [export_fp32(handed.model, handed.tokenizer, root / f"{name}-onnx" / "fp32", scratch, print)]
    for precision in ("int8", "int4"):
        exports.append(quantize(exports[0], precision, root / f"{name}-onnx", scratch))
    figures["exports"] = [(e.precision, e.seconds, e.size_bytes / 2**20) for e in exports]
    prompts, rows = eval_inputs(sweep.data, sweep.eval, handed.tokenizer)
    gating = time.perf_counter()
    parity = measure(
        TorchLM(handed.model, handed.tokenizer),
        Measured("pytorch", "transformers + peft", handed.size_bytes, handed.load_seconds),
        exports,
        prompts,
        rows,
        sweep.eval.max_new_tokens,
        sweep.eval.batch_size,
        Limits(1e-3, {"fp32": 0.01, "int8": 0.05, "int4": 0.15}),
    )
    figures["gate_seconds"] = time.perf_counter() - gating
    figures["ms_per_token"] = [(m.name, m.ms_per_token) for m in parity.models]
    figures["gate"] = "passed" if parity.passed else "FAILED: " + "; ".join(parity.failures)
    return figures


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="lorasweep-bench-scale-") as tmp:
        results = {}
        for name in SHAPES:
            print(f"{name}: measuring ...", flush=True)
            results[name] = measure_shape(name, Path(tmp))
    names = list(results)
    print()
    print("| figure | " + " | ".join(names) + " |")
    print("| --- | " + " | ".join("---" for _ in names) + " |")

    def row(label: str, cell) -> None:
        print(f"| {label} | " + " | ".join(cell(results[n]) for n in names) + " |")

    row("parameters (random init, published shape)", lambda r: f"{r['params'] / 1e6:.0f}M")
    row("steps per trial (batch 8, <= 64 tokens)", lambda r: str(r["steps"]))
    row("training tokens/s: lorasweep trial", lambda r: f"{r['trial_tps']:.0f}")
    row("training tokens/s: bare peft loop, same batches", lambda r: f"{r['loop_tps']:.0f}")
    row("**ratio (target >= 0.95)**, median of the trials' ratios", lambda r: f"**{r['ratio']:.3f}**")
    row("... each trial's ratio", lambda r: ", ".join(f"{x:.2f}" for x in r["ratios"]))
    row("trial seconds (lorasweep), median", lambda r: f"{r['trial_seconds']:.1f}")
    row(
        "lorasweep's own seconds per trial (vs the Trainer script), median",
        lambda r: f"{r['own_seconds']:.2f}",
    )
    row("... as a share of the trial", lambda r: f"{r['own_seconds'] / r['trial_seconds']:.1%}")
    row("peak RSS of the bench process, MB (2 bases)", lambda r: f"{r['peak_rss_mb']:.0f}")
    row("base load, once per worker (base + data), s", lambda r: f"{r['load_seconds']:.1f}")
    row("adapter size, MB (r=8, all linear)", lambda r: f"{r['adapter_mb']:.1f}")
    row("MLflow logging the adapter, s", lambda r: f"{r['log_seconds']:.2f}")
    for i, precision in enumerate(("fp32", "int8", "int4")):
        row(
            f"export {precision}: seconds / MB",
            lambda r, i=i: f"{r['exports'][i][1]:.0f} s / {r['exports'][i][2]:.0f} MB",
        )
    row("parity gate (4 prompts, 16 rows, 5 speed rounds), s", lambda r: f"{r['gate_seconds']:.0f}")
    for i, runtime in enumerate(("pytorch", "fp32", "int8", "int4")):
        row(f"ms/token {runtime} (greedy, batch 1)", lambda r, i=i: f"{r['ms_per_token'][i][1]:.1f}")
    row("gate", lambda r: str(r["gate"])[:60])


if __name__ == "__main__":
    main()
