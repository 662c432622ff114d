"""The ONNX exports promote can make, one entry each: a new precision is one `Precision` here.

This module imports nothing heavy: the parser (`--precision`'s choices and help), the sweep file's
promote section (its names and default tolerances) and the hand-over (Olive's pass, the gate's checks)
all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Precision:
    name: str
    summary: str  # one line for --help and the docs
    # The Olive pass that makes it from the fp32 export; None: the fp32 export itself.
    olive_pass: dict[str, Any] | None = field(default=None, hash=False)
    # How far its eval perplexity may move from PyTorch's by default, relative (0.01 is 1%).
    max_perplexity_change: float = 0.01
    # fp32 only: greedy generation equal to PyTorch's and the largest logit difference within
    # promote.max_logit_diff. Quantized weights change tokens and logits by design: measured, not gated.
    exact: bool = False


# Olive passes that work with the pinned versions (olive-ai 0.13). HQQ (OnnxHqqQuantization) exits
# cleanly with an output whose top-1 agreement with fp32 was 0% when we measured it: the gate would
# refuse it, so it has no entry.
REGISTRY: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", "the reference: always made, the others are quantized from it", exact=True),
        Precision(
            "int8",
            "dynamic int8 quantization (Olive's OnnxDynamicQuantization)",
            olive_pass={"type": "OnnxDynamicQuantization", "precision": "int8"},
            max_perplexity_change=0.05,
        ),
        Precision(
            "int4",
            "4-bit block-wise round-to-nearest weights (Olive's OnnxBlockWiseRtnQuantization)",
            olive_pass={"type": "OnnxBlockWiseRtnQuantization", "bits": 4, "block_size": 32},
            max_perplexity_change=0.15,
        ),
    )
}
PRECISIONS: tuple[str, ...] = tuple(REGISTRY)  # in export order: fp32 first


def default_max_perplexity_change() -> dict[str, float]:
    """promote.max_perplexity_change's default: each precision's own."""
    return {p.name: p.max_perplexity_change for p in REGISTRY.values()}
