"""The CUDA path in one short run (a few minutes on one GPU), through the CLI as a user runs it:

  1. bf16: a 1-trial sweep of the tiny base on the GPU in bf16 (model.device: cuda, precision: bf16);
  2. QLoRA: the same sweep with a 4-bit base (model.method: qlora, through bitsandbytes);
  3. export: the bf16 trial's fp32 ONNX export (merged on the CPU) through the parity gate;
  4. export: the QLoRA trial's too, whose eval-loss check is skipped (a 4-bit base against an fp32
     rebuild): its table prints PyTorch's eval loss beside the trial's, the gap to measure.

    .venv/bin/pip install -e '.[gpu]'      # bitsandbytes, for QLoRA's 4-bit layers
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu_check.py

Not part of CI: no GPU there. Prints one line per check with its time and figures, and exits 1 if
any check failed. Written without a GPU at hand: it has not been run yet (see docs/gpu.md).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

SWEEP = """\
study: {{name: {name}, metric: f1, n_trials: 1}}
model: {{base: tiny, device: cuda, precision: bf16, method: {method}}}
train: {{max_steps: 60, eval_steps: 20, per_device_train_batch_size: 16}}
eval: {{max_samples: 32, max_new_tokens: 10}}
promote: {{precisions: [fp32]}}
search_space:
  learning_rate: {{type: choice, values: [0.005]}}
"""


def lorasweep(folder: Path, *args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lorasweep")), *args],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def sweep(folder: Path, name: str, method: str) -> bool:
    (folder / f"{name}.yaml").write_text(SWEEP.format(name=name, method=method), encoding="utf-8")
    code, said, seconds = lorasweep(folder, "-q", "run", f"{name}.yaml")
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "mlruns" / "optuna.journal"))
    )
    trials = optuna.load_study(study_name=name, storage=storage).trials if code == 0 else []
    ok = code == 0 and trials and trials[0].state.name == "COMPLETE"
    metrics = trials[0].user_attrs.get("metrics", {}) if trials else {}
    figures = ", ".join(f"{k}={metrics[k]:.4g}" for k in ("f1", "eval_loss", "peak_cuda_mb") if k in metrics)
    print(f"{'ok ' if ok else 'FAILED'} {name}: exit {code} in {seconds:.0f} s; {figures or said[-2000:]}")
    return bool(ok)


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU")
        return 1
    print(
        f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
        f"bf16 {torch.cuda.is_bf16_supported()}"
    )
    with tempfile.TemporaryDirectory(prefix="lorasweep-gpu-") as tmp:
        folder = Path(tmp)
        results = [sweep(folder, "bf16", "lora"), sweep(folder, "qlora", "qlora")]
        for study in ("bf16", "qlora"):
            code, said, seconds = lorasweep(folder, "export", "--study", study, "--out", f"onnx-{study}")
            parity = folder / f"onnx-{study}" / "parity.json"
            report = json.loads(parity.read_text()) if code == 0 and parity.is_file() else {}
            passed = bool(report.get("passed"))
            verdict = "ok " if passed else "FAILED"
            print(f"{verdict} export of the {study} trial: exit {code} in {seconds:.0f} s")
            if report.get("trial_eval_loss") is not None:  # the gap the qlora case leaves unchecked
                rebuilt = math.log(report["models"][0]["perplexity"])
                change = rebuilt / report["trial_eval_loss"] - 1
                trained = report["trial_eval_loss"]
                print(f"  eval loss: trial {trained:.5g}, fp32 rebuild {rebuilt:.5g} ({change:+.2%})")
            print("\n".join(said.strip().splitlines()[-8:]))
            results.append(passed)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
