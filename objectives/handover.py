"""Handing over a finished trial: its model as the trial scored it, and the eval inputs it was
scored on, for the ONNX export and the parity gate on the study side.

Everything here is on the CPU in fp32, whatever the sweep trained on: the adapter is put on an fp32
copy of the base, unmerged (the model the trial scored).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from .data import load_rows, tokenize
from .model import Placement, base_identity, load_base
from .specs import DataSpec, EvalSpec, ModelSpec


@dataclass(frozen=True)
class TrialModel:
    model: PeftModel  # base + adapter, unmerged, in eval mode
    tokenizer: PreTrainedTokenizerBase
    files: dict[str, Path]  # "base" and each adapter's name: the folders it loads from
    size_bytes: int  # of those folders
    load_seconds: float  # from disk, as a user would load it
    base_identity: str  # of the base loaded (objectives.base_identity), to compare with the trial's


def load_trial_model(spec: ModelSpec, adapter: Path | Mapping[str, Path], scratch: Path) -> TrialModel:
    """The base as the sweep loaded it (tiny, a hub id or a folder), saved under scratch/base, with
    the trial's adapter on it: the handed-over model carries its own copy of the base, and its load
    time is measured from disk like an export's. Several adapters (name -> folder, for a bundle)
    are loaded on the one base under their names, the first active (peft's set_adapter switches)."""
    adapters = {"adapter": adapter} if isinstance(adapter, Path) else dict(adapter)
    base, tokenizer = load_base(spec.model_copy(update={"method": "lora"}), Placement("cpu", "fp32"))
    identity = base_identity(spec.base, spec.revision)  # after the load: the cache is up to date
    base.config.use_cache = True  # load_base turns the cache off for training; generation wants it
    base.save_pretrained(scratch / "base")
    tokenizer.save_pretrained(scratch / "base")  # with the pad token load_base gave it
    del base
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(scratch / "base")
    (first, folder), *others = adapters.items()
    base = AutoModelForCausalLM.from_pretrained(scratch / "base")
    model = PeftModel.from_pretrained(base, folder, adapter_name=first)
    for name, folder in others:
        model.load_adapter(folder, adapter_name=name)
    model.eval()
    loaded = time.monotonic() - started
    files = {"base": scratch / "base", **adapters}
    size = sum(f.stat().st_size for folder in files.values() for f in folder.rglob("*") if f.is_file())
    return TrialModel(model, tokenizer, files, size, loaded, identity)


def eval_inputs(
    data: DataSpec, eval: EvalSpec, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[list[int]], list[dict]]:
    """(prompts as token ids, eval rows as the sweep scored them: input_ids and labels). The prompts
    are the first eval.max_samples eval prompts, or, for text_template data, the first half of
    each eval text."""
    train, eval_rows = load_rows(data)
    tokenized = tokenize(data, train.select([]), eval_rows, tokenizer)  # only eval is needed
    rows = tokenized.eval.to_list()
    n = eval.max_samples
    if tokenized.eval_prompts:
        # The last data.max_length tokens of each, as the trial generated from them.
        prompts = [tokenizer(p)["input_ids"][-data.max_length :] for p in tokenized.eval_prompts[:n]]
    else:
        prompts = [r["input_ids"][: max(1, min(32, len(r["input_ids"]) // 2))] for r in rows[:n]]
    return prompts, rows
