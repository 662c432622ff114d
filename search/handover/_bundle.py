"""Several trials handed over as one ONNX base with LoRA inputs and one .onnx_adapter per trial.

On a device the base is the heavy part: K merged exports cost K bases, a bundle costs one base and
K adapters of a few MB, chosen at run time (onnxruntime-genai's Adapters, ONNX Runtime's
LoraAdapter). How it is built, with the pinned tools (onnxruntime-genai 0.18, olive-ai 0.13):

1. Model Builder builds the base from a "slot" adapter: rank 1 on every module that any trial
   adapts. It writes each adapted projection as the base MatMul plus lora_A and lora_B MatMuls
   whose weights are initializers (model.layers.N.attn.q_proj.lora_A.MatMul.weight).
2. Olive's ExtractAdapters pass turns those initializers into optional graph inputs with a
   dynamic rank (lora_r) whose default is an empty tensor: with no adapter active, the base alone.
3. Each trial's adapter goes through the same two tools, and what ExtractAdapters extracts from it
   is the trial's .onnx_adapter: named, transposed and scaled by the tool that built the graph, so
   it fits the graph's inputs. (Olive's convert-adapters writes peft's own names, which no Model
   Builder graph has: Olive issue 2277.) A module a trial does not adapt keeps its empty default.

What the tools cannot take is refused before anything is exported (`check_adapters`): adapters
other than plain LoRA (DoRA, trained biases, modules_to_save), and architectures Model Builder
lacks or writes a base of that ONNX Runtime refuses to run (the dynamo exporter writes no LoRA inputs).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExportFailed, UserError
from ._export import ModelBuilderUnsupported, architecture, model_builder, quiet_olive, runtime_refusal

if TYPE_CHECKING:
    import torch

ADAPTER_SUFFIX = ".onnx_adapter"


@dataclass(frozen=True)
class Bundle:
    folder: Path  # model.onnx (+ data), genai_config.json, the tokenizer, NAME.onnx_adapter per trial
    adapters: dict[str, Path]  # name ("trial-3") -> its .onnx_adapter in folder
    seconds: float

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.rglob("*") if f.is_file())

    @property
    def base_bytes(self) -> int:
        return self.size_bytes - sum(p.stat().st_size for p in self.adapters.values())


def adapter_name(trial_number: int) -> str:
    """A trial's adapter in a bundle, in its file name and in onnxruntime-genai's Adapters."""
    return f"trial-{trial_number}"


def check_adapters(adapters: dict[str, Path]) -> None:
    """Refuse, naming the trials and why, adapters the bundle's tools cannot take."""
    problems = []
    for name, folder in adapters.items():
        config = json.loads((folder / "adapter_config.json").read_text())
        reasons = []
        if config.get("peft_type", "LORA") != "LORA":
            reasons.append(f"it is a {config['peft_type']} adapter, not LoRA")
        if config.get("use_dora"):
            reasons.append("it uses DoRA (use_dora=true), which Model Builder does not export")
        if config.get("lora_bias") or config.get("bias", "none") != "none":
            reasons.append("it trains biases, which have no input in the base graph")
        if config.get("modules_to_save"):
            reasons.append(
                f"it trains whole modules ({', '.join(config['modules_to_save'])}), "
                "which one base cannot switch"
            )
        problems += [f"{name}: {r}" for r in reasons]
    if problems:
        raise UserError(
            "trials in an adapter bundle must be plain LoRA adapters, but:\n  "
            + "\n  ".join(problems)
            + "\nExport these trials one by one (lorasweep export --trial N) instead."
        )


def build_bundle(base: Path, adapters: dict[str, Path], out: Path, scratch: Path) -> Bundle:
    """The bundle of `adapters` (name -> peft adapter folder) on `base` (a transformers folder),
    written to out/ (new or empty)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bundle-", dir=scratch) as work_dir:
        work = Path(work_dir)
        slots = _slot_adapter(adapters, work / "slots")
        try:
            model_builder(base, work / "built-slots", work / "cache", adapter=slots)
        except ModelBuilderUnsupported as e:
            raise UserError(
                f"an adapter bundle must have a base that Model Builder exports, but {architecture(base)} is "
                f"not one ({e}): {', '.join(adapters)} cannot share one ONNX base. Export the trials one by "
                "one (lorasweep export --trial N) instead."
            ) from e
        refused = runtime_refusal(work / "built-slots")
        if refused is not None:  # the dynamo exporter writes no LoRA inputs: no other way to a bundle
            raise UserError(
                f"an adapter bundle must have a base that ONNX Runtime runs, but onnxruntime-genai refuses "
                f"Model Builder's {architecture(base)}: {refused}. Export the trials one by one (lorasweep "
                "export --trial N) instead: each then falls back to torch.onnx.export."
            )
        inputs = _extract(work / "built-slots", work / "extracted-slots", work)
        out.mkdir(parents=True, exist_ok=True)
        for item in (work / "extracted-slots").iterdir():
            if item.name.startswith("model.onnx"):
                shutil.move(item, out / item.name)
        for item in (work / "built-slots").iterdir():  # genai_config.json and the tokenizer
            if not item.name.startswith("model.onnx"):
                shutil.copy2(item, out / item.name)

        files = {}
        for name, adapter in adapters.items():
            model_builder(base, work / f"built-{name}", work / "cache", adapter=adapter)
            weights = _extract(work / f"built-{name}", work / f"extracted-{name}", work)
            _check_fits(name, adapter, weights, inputs)
            files[name] = out / f"{name}{ADAPTER_SUFFIX}"
            shutil.move(work / f"extracted-{name}" / f"adapter_weights{ADAPTER_SUFFIX}", files[name])
            for copy_of_base in (work / f"built-{name}", work / f"extracted-{name}"):
                shutil.rmtree(copy_of_base)  # keep one copy of the base at a time on disk
    return Bundle(out, files, time.monotonic() - started)


def _slot_adapter(adapters: dict[str, Path], out: Path) -> Path:
    """A rank-1 peft adapter on every module any of `adapters` adapts: Model Builder then gives each
    of them a LoRA path in the base graph. Its weights are never used (the inputs default to empty)."""
    from safetensors.torch import load_file, save_file

    tensors: dict[str, torch.Tensor] = {}
    modules: set[str] = set()
    config: dict[str, Any] = {}  # the first adapter's: the slot takes its other settings
    for folder in adapters.values():
        trial_config = json.loads((folder / "adapter_config.json").read_text())
        config = config or trial_config
        targets = trial_config["target_modules"]
        modules |= {targets} if isinstance(targets, str) else set(targets)
        for key, tensor in load_file(folder / "adapter_model.safetensors").items():
            if key not in tensors:  # lora_A is (r, in), lora_B (out, r): keep one rank
                tensors[key] = (tensor[:1] if ".lora_A." in key else tensor[:, :1]).contiguous()
    out.mkdir(parents=True)
    slot_config = {**config, "r": 1, "lora_alpha": 1, "use_rslora": False, "target_modules": sorted(modules)}
    slot_config.pop("rank_pattern", None), slot_config.pop("alpha_pattern", None)
    (out / "adapter_config.json").write_text(json.dumps(slot_config, indent=2))
    save_file(tensors, out / "adapter_model.safetensors")
    return out


def _extract(built: Path, out: Path, work: Path) -> dict[str, tuple[int, ...]]:
    """Olive's ExtractAdapters on built/model.onnx, into out/: the model with its LoRA weights as
    optional inputs of dynamic rank, and the weights as adapter_weights.onnx_adapter. Returns the
    weights' names and shapes."""
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort
    from olive.workflows import run as olive_run  # 10+ s to import: only when bundling

    extract = {
        "type": "ExtractAdapters",
        "make_inputs": True,
        "dynamic_lora_r": True,
        "optional_inputs": True,
    }
    workflow = {
        "input_model": {"type": "ONNXModel", "model_path": str(built / "model.onnx")},
        "passes": {"extract": {**extract, "save_format": "onnx_adapter"}},
        "output_dir": str(out),
        "cache_dir": str(work / "olive-cache"),
        "log_severity_level": 3,
    }
    quiet_olive()
    try:
        olive_run(workflow)
    except Exception as e:  # an Olive failure: name the pass and its reason
        raise ExportFailed(f"Olive ExtractAdapters failed: {type(e).__name__}: {e}") from e
    weights = out / f"adapter_weights{ADAPTER_SUFFIX}"
    if not weights.is_file():
        raise ExportFailed(f"Olive ExtractAdapters found no LoRA weights in {built / 'model.onnx'}")
    _drop_repeated_inputs(out / "model.onnx")
    parameters = ort.AdapterFormat.read_adapter(str(weights)).get_parameters()
    return {name: tuple(value.shape()) for name, value in parameters.items()}


def _drop_repeated_inputs(model_path: Path) -> None:
    """olive-ai 0.13's ExtractAdapters lists each LoRA input twice (once when it makes the input, once
    when it makes it optional): ONNX Runtime runs it, but it is not valid ONNX."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    seen, kept = set(), []
    for value in model.graph.input:
        if value.name not in seen:
            seen.add(value.name)
            kept.append(value)
    if len(kept) < len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(kept)
        onnx.save(model, str(model_path))  # external data, if any, stays where it is


def _check_fits(
    name: str, adapter: Path, weights: dict[str, tuple[int, ...]], inputs: dict[str, tuple[int, ...]]
) -> None:
    """Every LoRA matrix of the trial must have become a weight the base graph takes as an input."""
    from safetensors.torch import load_file

    keys = load_file(adapter / "adapter_model.safetensors")
    matrices = sum(1 for key in keys if ".lora_A." in key or ".lora_B." in key)
    missing = sorted(set(weights) - set(inputs))
    if missing or len(weights) < matrices:
        raise ExportFailed(
            f"{name}'s adapter must fit the bundle's base graph, but "
            + (
                f"{len(missing)} of its weights have no input there (first: {missing[0]})"
                if missing
                else f"Model Builder exported {len(weights)} of its {matrices} LoRA matrices"
            )
        )
