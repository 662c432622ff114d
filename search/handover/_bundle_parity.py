"""The parity gate of an adapter bundle: each adapter is checked through the bundle as a single
export is (_parity), and the bundle as a whole on what a single export cannot get wrong.

Gated, on the sweep's eval data:
- with adapter N active, the bundle against PyTorch's base + adapter N: greedy tokens equal (ties
  counted as in _parity), logits within promote.max_logit_diff, perplexity within fp32's limit;
- with no adapter active, the bundle against PyTorch's base, by the same three checks;
- switching: the first adapter, then every other, then the first again gives the first's logits
  and tokens again (a runtime that kept a previous adapter's weights would fail it);
- PyTorch's base + adapter N gives trial N's recorded eval loss, within max_eval_loss_change.
Reported: the size of the bundle against the merged exports it replaces, each adapter's load and
switch time, and its ms/token against the merged export of the same trial, measured in turns in
the same run (_parity.speed).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._bundle import Bundle
from ._export import Exported
from ._parity import (
    SPEED_PROMPTS,
    SPEED_RUNS,
    Check,
    Limits,
    Measured,
    OnnxLM,
    TorchLM,
    gate,
    pad_rows,
    reproduces,
    score,
    speed,
)

BUNDLE_HOW = "Model Builder + Olive ExtractAdapters"


@dataclass
class AdapterFigures:
    """One trial's adapter in the bundle."""

    name: str  # trial-N: the file's stem, and its name in onnxruntime-genai's Adapters
    trial: int
    rank: int
    size_bytes: int  # the .onnx_adapter file
    load_ms: float  # onnxruntime-genai's Adapters.load of the file
    switch_ms: float  # Generator.set_active_adapter, the median over the gate's generations
    merged_bytes: int  # the merged fp32 export of the same trial, which this adapter replaces
    merged_ms_per_token: float
    measured: Measured  # the bundle with this adapter active, and the gate's checks on it
    merged_ms_runs: list[float] = field(default_factory=list)  # the merged export's timed rounds

    @property
    def merged(self) -> Measured:
        """The merged export's speed figures, timed in the same rounds as the bundle's."""
        m = self.measured
        return Measured(
            f"{self.name} merged",
            "",
            self.merged_bytes,
            0.0,
            ms_per_token=self.merged_ms_per_token,
            ms_runs=self.merged_ms_runs,
            load_average=m.load_average,
            cores=m.cores,
        )


@dataclass
class BundleParity:
    prompts: int
    rows: int
    size_bytes: int  # the whole bundle: one base and every adapter
    base: Measured  # the bundle with no adapter active, against PyTorch's base
    adapters: list[AdapterFigures]
    switch: Check
    speed_runs: int = SPEED_RUNS
    speed_prompts: int = SPEED_PROMPTS
    max_eval_loss_change: float | None = None  # each trial's PyTorch eval loss from its recorded one

    @property
    def passed(self) -> bool:
        return self.base.passed and self.switch.passed and all(a.measured.passed for a in self.adapters)

    @property
    def failures(self) -> list[str]:
        gated = [self.base] + [a.measured for a in self.adapters]
        found = [f"{m.name}: {c}" for m in gated for c in m.checks if not c.passed]
        return found + ([] if self.switch.passed else [str(self.switch)])

    @property
    def merged_bytes(self) -> int:
        return sum(a.merged_bytes for a in self.adapters)

    def save(self, path: Path) -> None:
        data = {"passed": self.passed, **asdict(self)}
        data["base"]["passed"] = self.base.passed
        for a, figures in zip(data["adapters"], self.adapters, strict=True):
            a["measured"]["passed"] = figures.measured.passed
        path.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> BundleParity:
        """What `save` wrote (a promote that completes a killed one reads the gate's findings back)."""
        data = json.loads(path.read_text())
        data.pop("passed")
        adapters = [
            AdapterFigures(**{**a, "measured": Measured.from_dict(a["measured"])})
            for a in data.pop("adapters")
        ]
        return cls(
            **{
                **data,
                "base": Measured.from_dict(data["base"]),
                "adapters": adapters,
                "switch": Check(**data["switch"]),
            }
        )


def measure_bundle(
    reference: TorchLM,
    bundle: Bundle,
    trials: dict[str, int],
    ranks: dict[str, int],
    merged: dict[str, Exported],
    prompts: list[list[int]],
    rows: list[dict],
    max_new_tokens: int,
    batch_size: int,
    limits: Limits,
    trial_eval_losses: dict[str, float] | None = None,
) -> BundleParity:
    """Gate every adapter of `bundle` (name -> trial number in `trials`) against `reference`, a
    PeftModel holding the same adapters under the same names; `merged` holds each trial's merged
    fp32 export, for the sizes and speeds the bundle is compared with. With an adapter, PyTorch must
    give the eval loss its trial recorded (`trial_eval_losses`, by name)."""
    losses = trial_eval_losses or {}
    tie = 2 * limits.max_logit_diff
    lm = OnnxLM(Exported("fp32", bundle.folder, "genai", BUNDLE_HOW, bundle.seconds), reference.eos_id)
    base = Measured("base", f"{BUNDLE_HOW}, no adapter", bundle.base_bytes, lm.load_seconds)
    score(reference.using(None), {"base": (lm, base)}, prompts, rows, max_new_tokens, batch_size, tie)
    gate(base, len(prompts), limits, "fp32")

    views, figures = {}, []
    for name, file in bundle.adapters.items():
        views[name] = view = lm.using(name, file)
        m = Measured(name, f"bundle + {file.name}", bundle.base_bytes + file.stat().st_size, lm.load_seconds)
        torch_perplexity = score(
            reference.using(name), {name: (view, m)}, prompts, rows, max_new_tokens, batch_size, tie
        )
        gate(m, len(prompts), limits, "fp32")
        if name in losses:
            m.checks.append(reproduces(torch_perplexity, losses[name], limits))
        single = OnnxLM(merged[name], reference.eos_id)
        single_m = Measured(f"{name} merged", merged[name].how, merged[name].size_bytes, single.load_seconds)
        speed(
            {single_m.name: single, name: view},
            {single_m.name: single_m, name: m},
            prompts[:SPEED_PROMPTS],
            max_new_tokens,
            reference=single_m.name,
        )
        del single  # its sessions: one merged model in memory at a time
        figures.append(
            AdapterFigures(
                name,
                trials[name],
                ranks[name],
                file.stat().st_size,
                1000 * view.adapter_load_seconds,
                1000 * statistics.median(view.switch_seconds or [0.0]),
                single_m.size_bytes,
                single_m.ms_per_token,
                m,
                single_m.ms_runs,
            )
        )
    switch = _switch(
        list(views.values()) or [lm], lm, prompts, rows[:batch_size], max_new_tokens, reference, limits
    )
    return BundleParity(
        len(prompts),
        len(rows),
        bundle.size_bytes,
        base,
        figures,
        switch,
        SPEED_RUNS,
        min(len(prompts), SPEED_PROMPTS),
        limits.max_eval_loss_change if losses else None,
    )


def _switch(
    views: list[OnnxLM],
    base: OnnxLM,
    prompts: list[list[int]],
    rows: list[dict],
    max_new_tokens: int,
    reference: TorchLM,
    limits: Limits,
) -> Check:
    """The first adapter, then each other (or the base alone, with one adapter), then the first
    again: the first's outputs must come back."""
    first, others = views[0], views[1:] or [base]
    ids, mask, _ = pad_rows(rows, reference.pad_id)

    def outputs(lm: OnnxLM) -> tuple[np.ndarray, list[list[int]]]:
        return lm.logits(ids, mask), [lm.greedy(p, max_new_tokens) for p in prompts]

    logits, tokens = outputs(first)
    for other in others:
        outputs(other)
    logits_again, tokens_again = outputs(first)
    differ = sum(a != b for a, b in zip(tokens, tokens_again, strict=True))
    diff = float(np.abs(logits_again - logits)[mask.astype(bool)].max())
    order = " -> ".join([first.adapter, *(o.adapter for o in others), first.adapter])
    return Check(
        f"switching adapters {order}",
        differ == 0 and diff <= limits.max_logit_diff,
        f"tokens differing on {differ} of {len(prompts)} prompts, logits by {diff:.3g}",
        f"{first.adapter}'s first outputs again",
    )
