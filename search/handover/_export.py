"""ONNX exports of a trial's base + adapter: fp32 first, then Olive's quantized variants of it.

fp32, with the adapter merged into the base:
- onnxruntime-genai's Model Builder where it knows the architecture (Llama, Qwen, Phi, Mistral,
  Gemma, ...): a folder that onnxruntime-genai generates from, with a KV cache ("genai").
- torch.onnx.export(dynamo=True) otherwise (GPT-2-style models, for example): a model from
  (input_ids, attention_mask) to logits, without a cache ("logits"). Also where Model Builder writes
  a model that ONNX Runtime then refuses to run: its fused kernels have shape rules of their own
  (GroupQueryAttention wants a rotary size that is a multiple of 16, which a small Phi-2 lacks), and
  Model Builder does not check them. Each export is run on two tokens before it is handed on, so a
  refusal is one line that names the architecture and ONNX Runtime's reason, not a traceback in the gate.
int8 and int4: an Olive workflow over the fp32 model, saved beside the export as
olive_<precision>.json so that `cd EXPORT && olive run --config olive_int8.json` redoes it.

The fp32 export is not an Olive pass because Olive's own exporters fail with the pinned versions
(measured with olive-ai 0.13.0, transformers 5.25, torch 2.13, onnxruntime-genai 0.18, on the tiny
base): OnnxConversion traces the model with TorchScript, which refuses the DynamicCache that a
transformers 5 model returns ("Only tuples, lists and Variables are supported as JIT inputs/outputs");
with use_dynamo_exporter it stops on its own input names ("'past_key_values' is not in list"); and
its ModelBuilder pass imports onnxruntime_genai.models.quantized_model, which onnxruntime-genai 0.18
no longer has. So Model Builder and torch.onnx are called directly, and Olive only quantizes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

from ..errors import ExportFailed
from ..precisions import REGISTRY

if TYPE_CHECKING:
    from peft import PeftModel

Kind = Literal["genai", "logits"]


@dataclass(frozen=True)
class Exported:
    precision: str
    folder: Path
    kind: Kind  # genai: an onnxruntime-genai folder; logits: (input_ids, attention_mask) -> logits
    how: str  # the tool that made it, for the record
    seconds: float

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.rglob("*") if f.is_file())


def export_fp32(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    out: Path,
    scratch: Path,
    log: Callable[[str], None] = print,
) -> Exported:
    """Merge the adapter into a copy of the base and export it to out/ (which must not exist); the
    merged model's files go under `scratch` (the caller's, which it removes however it exits)."""
    started = time.monotonic()
    merged = copy.deepcopy(model).merge_and_unload().eval()  # the PeftModel stays the reference
    with tempfile.TemporaryDirectory(prefix="merged-", dir=scratch) as merging:
        merged_dir = Path(merging) / "merged"
        merged.save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
        try:
            model_builder(merged_dir, out, Path(merging) / "cache")
            refused = runtime_refusal(out)
            if refused is None:
                return Exported(
                    "fp32", out, "genai", "onnxruntime-genai Model Builder", time.monotonic() - started
                )
            log(
                f"export: onnxruntime-genai refuses to run Model Builder's {architecture(merged_dir)}: "
                f"{refused}; using torch.onnx.export(dynamo=True) instead"
            )
        except ModelBuilderUnsupported as e:
            log(f"export: {e}; using torch.onnx.export(dynamo=True) instead")
    shutil.rmtree(out, ignore_errors=True)
    _dynamo(merged, tokenizer, out)
    return Exported("fp32", out, "logits", "torch.onnx.export (dynamo)", time.monotonic() - started)


def architecture(model: Path) -> str:
    """The architecture a transformers folder's config names (PhiForCausalLM)."""
    config = json.loads((model / "config.json").read_text())
    return (config.get("architectures") or [config.get("model_type", "unknown")])[0]


def runtime_refusal(folder: Path) -> str | None:
    """Why onnxruntime-genai will not run the model in `folder` (ONNX Runtime's reason, one line),
    or None when it generates from two tokens."""
    import onnxruntime_genai as og

    try:
        with _native_stderr_muted():  # ONNX Runtime logs the error itself too, in colour: said once
            model = og.Model(str(folder))
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=3, do_sample=False)
            generator = og.Generator(model, params)
            generator.append_tokens([0, 1])
            generator.generate_next_token()
    except RuntimeError as e:  # what a kernel's shape check raises
        return ort_reason(e)
    return None


@contextlib.contextmanager
def _native_stderr_muted() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the block: what native code (ONNX Runtime's logger) writes."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def ort_reason(error: Exception) -> str:
    """ONNX Runtime's own words from an error, without its source paths or a final period:
    "GroupQueryAttention: cos_cache dimension 1 must be <= head_size / 2 and a multiple of 8"."""
    text = " ".join(str(error).split())
    node = re.search(r"running (\w+) node", text)
    said = text.split("Status Message:", 1)[-1].strip()
    said = re.sub(r"^\S+\.(h|cc|cpp):\d+ ", "", said)  # the source file and line, where it names them
    said = said.rstrip(".")  # the caller's sentence goes on after it
    return f"{node.group(1)}: {said}" if node else said


class ModelBuilderUnsupported(Exception):
    """Model Builder does not know this architecture."""


def model_builder(model: Path, out: Path, cache: Path, adapter: Path | None = None) -> None:
    """An fp32 onnxruntime-genai folder at out/ from the transformers folder `model`; with `adapter`
    (a peft folder), its LoRA matrices stay separate MatMuls beside the base's."""
    # A subprocess: the builder prints progress bars, loads the model once more in its own memory,
    # and has no stable Python API (its module-level entry point is the documented one).
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder"]
    command += ["-i", str(model), "-o", str(out), "-p", "fp32", "-e", "cpu", "-c", str(cache)]
    if adapter is not None:
        command += ["--extra_options", f"adapter_path={adapter}"]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode == 0:
        return
    said = (done.stderr or done.stdout).strip()
    if "is not currently supported" in said:
        raise ModelBuilderUnsupported(f"Model Builder does not support {architecture(model)}")
    raise ExportFailed("Model Builder failed: " + "\n".join(said.splitlines()[-8:]))


class _LogitsOnly(torch.nn.Module):
    """The exported graph: no cache in or out, so one ONNX model serves any sequence length."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def _dynamo(merged: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    example = tokenizer(["an example", "a longer example text"], return_tensors="pt", padding=True)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}}
    # The exporter warns once per torchvision operator it cannot register when torchvision is not
    # installed (nms, roi_align, ...): four raw log lines about operators no language model uses.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(
            _LogitsOnly(merged),
            (example["input_ids"], example["attention_mask"]),
            dynamo=True,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_shapes=shapes,
            verbose=False,
        )
    except Exception as e:  # whatever the exporter raises: say which tool failed, and why
        raise ExportFailed(f"torch.onnx.export failed: {type(e).__name__}: {e}") from e
    if program is None:  # what torch.onnx.export returns only without dynamo=True
        raise ExportFailed("torch.onnx.export returned no program")
    out.mkdir(parents=True)
    program.save(str(out / "model.onnx"))  # external data only past protobuf's 2 GB limit
    tokenizer.save_pretrained(out)
    try:  # ONNX Runtime's kernels have rules the exporter does not check: run it once here
        import onnxruntime as ort

        session = ort.InferenceSession(str(out / "model.onnx"))
        session.run(["logits"], {k: v.numpy() for k, v in example.items() if k in shapes})
    except Exception as e:  # ONNX Runtime's errors share no base class (Fail, InvalidGraph, ...)
        name = getattr(merged.config, "architectures", None) or [type(merged).__name__]
        raise ExportFailed(
            f"ONNX Runtime refuses to run the {name[0]} export of torch.onnx.export: {ort_reason(e)}"
        ) from e


def quantize(fp32: Exported, precision: str, root: Path, scratch: Path) -> Exported:
    """root/<precision>/ from root/fp32/ through the precision's Olive pass (search/precisions.py),
    as a workflow saved as root/olive_<precision>.json; Olive's cache goes under `scratch`."""
    started = time.monotonic()
    olive_pass = REGISTRY[precision].olive_pass
    if olive_pass is None:
        raise ValueError(f"precision {precision!r} is the fp32 export itself: nothing to quantize")
    quant_pass: dict[str, Any] = dict(olive_pass)
    if quant_pass["type"] == "OnnxBlockWiseRtnQuantization":
        # olive-ai 0.13's RTN pass renames a graph output it quantizes (logits -> logits_Q4), which
        # breaks onnxruntime-genai and every caller; the LM head stays in fp32 (common practice too).
        quant_pass["nodes_to_exclude"] = _producers(fp32.folder / "model.onnx", "logits")
    workflow: dict[str, Any] = {
        "input_model": {"type": "ONNXModel", "model_path": f"{fp32.folder.name}/model.onnx"},
        "passes": {"quantize": quant_pass},
        "output_dir": precision,
        "log_severity_level": 3,
    }
    (root / f"olive_{precision}.json").write_text(json.dumps(workflow, indent=2) + "\n")
    # Olive sends telemetry unless told not to, and waits on the network for it when offline.
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    from olive.workflows import run as olive_run  # 10+ s to import: only when quantizing

    quiet_olive()

    with tempfile.TemporaryDirectory(prefix="olive-", dir=scratch) as cache:
        absolute = {
            **workflow,
            "input_model": {**workflow["input_model"], "model_path": str(fp32.folder / "model.onnx")},
            "output_dir": str(root / precision),
            "cache_dir": cache,
        }
        try:
            olive_run(absolute)
        except Exception as e:  # an Olive failure: name the pass and its reason
            raise ExportFailed(f"Olive {quant_pass['type']} failed: {type(e).__name__}: {e}") from e
    folder = root / precision
    if not (folder / "model.onnx").is_file():
        raise ExportFailed(f"Olive {quant_pass['type']} wrote no model.onnx to {folder}")
    for item in fp32.folder.iterdir():  # the tokenizer and genai_config.json travel with the model
        if not item.name.startswith("model.onnx") and not (folder / item.name).exists():
            shutil.copy2(item, folder / item.name)
    return Exported(precision, folder, fp32.kind, f"Olive {quant_pass['type']}", time.monotonic() - started)


def quiet_olive() -> None:
    """Olive turns its logger up to INFO to print its run history, whatever the configured level."""
    logging.getLogger("olive.engine.engine").addFilter(_warnings_only)


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def _producers(model_path: Path, output: str) -> list[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [node.name for node in graph.node if output in node.output]
