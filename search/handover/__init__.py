"""Hand-over: the best trial's adapter, rebuilt, checked, exported and registered.

Its public API, what the rest of lorasweep (the CLI, the Python API, the benchmarks) uses:
promote / export and what they return (Promotion, Parity, BundleParity, Measured), and the steps
on their own for measuring an export outside a study (export_fp32, quantize, Limits, TorchLM,
measure). Everything else here is private to the package.

_promote.py        promote / export: the steps, resumable, one promote per registered model at a time
_ownership.py      who may move a champion, where exports go, promotes that take turns
_export.py         the ONNX exports (torch.onnx, onnxruntime-genai's builder, Olive's quantization)
_parity.py         the gate: each export against PyTorch (logits, perplexity, generation, speed)
_parity_table.py   the gate's table as printed and stored
_bundle.py         several trials' adapters on one exported base (onnxruntime-genai's multi-LoRA)
_bundle_parity.py  the bundle's gate
_registry.py       MLflow's Model Registry: versions, aliases, the LoggedModel's progress
_tags.py           a version's tags (record.py's keys) and description
_served_model.py   the registered pyfunc model that serves an export
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._bundle_parity import BundleParity
    from ._export import Exported, export_fp32, quantize
    from ._parity import Limits, Measured, Parity, TorchLM, measure
    from ._promote import Promotion, export, promote

# Loaded when first asked for: these pull in torch, ONNX Runtime and MLflow's model code.
_LAZY = {
    "BundleParity": "_bundle_parity",
    "Exported": "_export",
    "Limits": "_parity",
    "Measured": "_parity",
    "Parity": "_parity",
    "Promotion": "_promote",
    "TorchLM": "_parity",
    "export": "_promote",
    "export_fp32": "_export",
    "measure": "_parity",
    "promote": "_promote",
    "quantize": "_export",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BundleParity",
    "Exported",
    "Limits",
    "Measured",
    "Parity",
    "Promotion",
    "TorchLM",
    "export",
    "export_fp32",
    "measure",
    "promote",
    "quantize",
]
