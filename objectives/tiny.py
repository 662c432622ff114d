"""The embedded tiny base model: a ~1M-parameter Llama that lorasweep builds itself, offline.

No model hub is reachable in CI and many users try a tool offline first, so the demo needs a base of
a real architecture that the project can make from nothing: a byte-level BPE tokenizer and a
4-layer Llama, pretrained for about a minute on the CPU on text from ``objectives._corpus``.

Why the pretraining text looks the way it does (BRIEF section 5, measured): a base that never saw an
eos token gives a LoRA that never learns to stop, so every document ends with eos; a base that saw
the label words used at random made them interchangeable and LoRA stayed at chance, so the corpus
uses the tone words for what they mean, in sentences unlike the task's ``Phrase:/Tone:`` format so
the base does not solve the task before tuning. Topics need the same care (measured here): used
alike, their embeddings collapsed (cosine 0.94) and neither the base nor LoRA could copy the topic
into the answer, so each topic has a fact of its own and some documents repeat a list of topics.

The build is deterministic (fixed seeds, fixed data order) and cached under a folder named after a
hash of the recipe, so changing a constant here or the corpus version rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from . import _corpus
from ._knobs import cache_root
from .config import TINY_BASE_NAME

# The recipe. Every value here goes into the cache key.
RECIPE = {
    "corpus_version": _corpus.CORPUS_VERSION,
    "vocab_size": 1024,  # a cap: this small corpus runs out of merges near 830 tokens
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_layers": 4,
    "num_heads": 4,
    "max_length": 128,  # model_max_length; task rows are ~25 tokens
    "block": 64,  # pretraining row length; documents are packed whole into rows
    "documents": 20000,
    "steps": 600,
    "batch_size": 16,  # more, smaller steps: the base must learn to copy, which takes updates
    "lr": 5e-3,
    "warmup": 30,
    "seed": 0,
}
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"


def tiny_base_folder(cache_dir: Path | None = None) -> Path:
    """Where the tiny base is (or will be) built: named after a hash of the recipe."""
    root = Path(cache_dir or cache_root())
    key = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:10]
    return root / f"{TINY_BASE_NAME}-{key}"


def ensure_tiny_base(cache_dir: Path | None = None, *, log: Callable[[str], None] | None = None) -> Path:
    """Return a folder that ``from_pretrained`` loads as the tiny base, building it on first use."""
    log = log or (lambda _msg: None)
    target = tiny_base_folder(cache_dir)
    root = target.parent
    # The folder only appears by an atomic rename of a finished build, so existing means complete.
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{target.name}.lock")):  # a second builder waits, then finds it built
        if target.is_dir():
            return target
        for stale in root.glob(f".{target.name}-*"):  # left by a killed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
        try:
            _build(tmp, log)
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _build(out: Path, log: Callable[[str], None]) -> None:
    start = time.monotonic()
    docs = _corpus.pretrain_documents(RECIPE["documents"])
    tokenizer = _train_tokenizer(docs)
    log(f"tiny base: tokenizer trained, {len(tokenizer)} tokens")
    rows = _pack(docs, tokenizer)
    model = _init_model(tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"tiny base: pretraining {n_params / 1e6:.2f}M parameters on {len(rows)} rows")
    _pretrain(model, rows, tokenizer.pad_token_id, log)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log(f"tiny base: built in {time.monotonic() - start:.0f}s")


def _train_tokenizer(docs: list[str]) -> PreTrainedTokenizerFast:
    # Byte-level BPE: any text encodes (no unknown token) and decode gives back spaces exactly.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=RECIPE["vocab_size"],
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer)
    # No template adds bos or eos: like SmolLM2 and Qwen, callers append eos where a text ends.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=RECIPE["max_length"],
    )


def _pack(docs: list[str], tokenizer: PreTrainedTokenizerFast) -> torch.Tensor:
    """Documents + eos, packed whole and in order into rows of ``block`` tokens, padded at the end."""
    block, eos, pad = RECIPE["block"], tokenizer.eos_token_id, tokenizer.pad_token_id
    rows: list[list[int]] = []
    row: list[int] = []
    for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids = ids[: block - 1] + [eos]
        if len(row) + len(ids) > block:
            rows.append(row + [pad] * (block - len(row)))
            row = []
        row += ids
    rows.append(row + [pad] * (block - len(row)))
    return torch.tensor(rows)


def _init_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=RECIPE["hidden_size"],
        intermediate_size=RECIPE["intermediate_size"],
        num_hidden_layers=RECIPE["num_layers"],
        num_attention_heads=RECIPE["num_heads"],
        num_key_value_heads=RECIPE["num_heads"],
        max_position_embeddings=RECIPE["max_length"],
        tie_word_embeddings=True,  # saves a vocab x hidden matrix, a third of the model at this size
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(RECIPE["seed"])
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _pretrain(model: LlamaForCausalLM, rows: torch.Tensor, pad_id: int, log: Callable[[str], None]) -> None:
    steps, batch, warmup = RECIPE["steps"], RECIPE["batch_size"], RECIPE["warmup"]
    # No weight decay: tokens the corpus uses rarely would shrink towards one another.
    opt = torch.optim.AdamW(model.parameters(), lr=RECIPE["lr"], betas=(0.9, 0.95), weight_decay=0.0)

    def lr_factor(s: int) -> float:  # linear warmup, then cosine decay to zero
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    gen = torch.Generator().manual_seed(RECIPE["seed"])  # data order fixed by the seed alone
    epochs = steps * batch // len(rows) + 1
    order = torch.cat([torch.randperm(len(rows), generator=gen) for _ in range(epochs)])
    model.train()
    last_log = time.monotonic()
    for step in range(steps):
        ids = rows[order[step * batch : (step + 1) * batch]]
        mask = ids != pad_id
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(~mask, -100)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if time.monotonic() - last_log > 5 or step == steps - 1:
            log(f"tiny base: step {step + 1}/{steps} loss {loss.item():.3f}")
            last_log = time.monotonic()
    model.eval()
