"""Hand-over: the best trial's adapter, rebuilt, checked, exported and registered.

_promote.py        promote / export: the steps, resumable, one promote per registered model at a time
_ownership.py      who may move a champion, where exports go, promotes that take turns
_export.py         the ONNX exports (torch.onnx, onnxruntime-genai's builder, Olive's quantization)
_parity.py         the gate: each export against PyTorch (logits, perplexity, generation, speed)
_parity_table.py   the gate's table as printed and stored
_bundle.py         several trials' adapters on one exported base (onnxruntime-genai's multi-LoRA)
_bundle_parity.py  the bundle's gate
_registry.py       MLflow's Model Registry: versions, aliases, tags
_served_model.py   the registered pyfunc model that serves an export
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._bundle_parity import BundleParity
    from ._parity import Measured, Parity
    from ._promote import Promotion, export, promote

# Loaded when first asked for: these pull in torch, ONNX Runtime and MLflow's model code.
_LAZY = {
    "BundleParity": "_bundle_parity",
    "Measured": "_parity",
    "Parity": "_parity",
    "Promotion": "_promote",
    "export": "_promote",
    "promote": "_promote",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BundleParity", "Measured", "Parity", "Promotion", "export", "promote"]
