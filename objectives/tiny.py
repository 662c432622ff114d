"""The embedded tiny base model: a ~1M-parameter Llama that ships with lorasweep as a 3.8 MB asset.

No model hub is reachable in CI and many users try a tool offline first, so the demo needs a base of
a real architecture that the project can make from nothing: a byte-level BPE tokenizer and a
4-layer Llama, pretrained for about a minute on the CPU on text from ``objectives._corpus``.

It ships built (``objectives/assets/tiny``, checked against ``SHIPPED_SHA256`` before use) rather than
being built on each machine: the build is deterministic on one machine, but pretraining's floats round
differently on another CPU or torch build, so a base built per machine made every machine's demo
figures a little different, and cost each fresh machine a minute. ``python -m
lorasweep.objectives.tiny`` (``make tiny-base``) rebuilds the asset from the recipe below and prints
the hashes to record here.

Why the pretraining text looks the way it does, as earlier builds of this base showed: a base that
never saw an eos token gave a LoRA that never learnt to stop, so every document ends with eos; a base
that saw the label words used at random made them interchangeable and LoRA stayed at chance, so the corpus
uses the tone words for what they mean, in sentences unlike the task's ``Phrase:/Tone:`` format so
the base does not solve the task before tuning. Topics need the same care (measured here): used
alike, their embeddings collapsed (cosine 0.94) and neither the base nor LoRA could copy the topic
into the answer, so each topic has a fact of its own and some documents repeat a list of topics.
"""

from __future__ import annotations

import functools
import hashlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from . import _corpus
from .config import InputError

SHIPPED = Path(__file__).parent / "assets" / "tiny"
# What `python -m lorasweep.objectives.tiny` printed when it built the shipped files.
SHIPPED_SHA256 = {
    "chat_template.jinja": "e7b4f74f7c524e00e89e801ff0412329194c943423d0949a33be7072cc76f571",
    "config.json": "502b032db721264302cf76e7fb4b82be2dbad082f7bc90c954eae8196ed372f6",
    "generation_config.json": "b3774c2596ef62cd2f3a08561715f3c8b423448d4f03f89fc62181c461218360",
    "model.safetensors": "a7a190d1cb38bf35e6f746f5366e4fdb5fbb6e92796c70632db41204dd27740d",
    "tokenizer.json": "597370d0eb5249b26e9d7069ed813588f59296fa43c7503fdbd3dc88ab1c89fc",
    "tokenizer_config.json": "83f9010345c3fb219eb02aac38bc476c2b6cf73cbd84c4b1b77790ae587e5fd3",
}


# The recipe the shipped files were built from.
class _Recipe(TypedDict):
    corpus_version: int
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    max_length: int
    block: int
    documents: int
    steps: int
    batch_size: int
    lr: float
    warmup: int
    seed: int


RECIPE: _Recipe = {
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
# The chat template (for rows of messages, data.conversational): the base knows no "user" or
# "assistant", only its pretraining text's "Phrase: ...\nTone: ...", so a user turn is rendered as a
# phrase and an assistant turn as its tone line. A system turn is its content on a line of its own.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ 'Phrase: ' + message['content'] + '\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'Tone: ' + message['content'] + eos_token + '\n' }}"
    "{%- else -%}{{ message['content'] + '\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Tone:' }}{%- endif -%}"
)


# Tokens per word of the built-in tone data under the tiny base's tokenizer (1.95, measured on its
# rendered rows); text far above it is text the base never saw, split almost into characters.
DEMO_TOKENS_PER_WORD = 1.95
TOKENS_PER_WORD_LIMIT = 2.5


def fit_note(rows: Sequence[Sequence[int]], tokenizer: PreTrainedTokenizerBase) -> str | None:
    """A note when the tokenized rows are not text the tiny base can learn: its ~830-token
    vocabulary was trained on the tone data alone, so other text splits almost into characters and
    every trial ends up predicting one label. None when they are."""
    sample = list(rows[:200])
    # decode gives one string for one row of ids (its list results are for batches)
    words = sum(len(str(tokenizer.decode(list(ids), skip_special_tokens=True)).split()) for ids in sample)
    tokens = sum(len(ids) for ids in sample)
    if not words or tokens / words <= TOKENS_PER_WORD_LIMIT:
        return None
    return (
        f"note: the built-in tiny base splits this data into {tokens / words:.1f} tokens per word (its own "
        f"tone data: {DEMO_TOKENS_PER_WORD}): it knows the tone data's words and little else, and will "
        "not learn this text. It is for trying lorasweep out; name a real base, for example "
        "model.base: HuggingFaceTB/SmolLM2-135M."
    )


def tiny_base_folder() -> Path:
    """The folder ``from_pretrained`` loads as the tiny base: the shipped asset."""
    return SHIPPED


def ensure_tiny_base() -> Path:
    """The tiny base's folder, once its files are checked to be the bytes that were shipped."""
    _check(SHIPPED)
    return SHIPPED


@functools.cache  # once per process: hashing 3.8 MB takes about 10 ms
def _check(folder: Path) -> None:
    differ = [name for name, digest in SHIPPED_SHA256.items() if file_sha256(folder / name) != digest]
    if differ:
        raise InputError(
            f"The built-in tiny base at {folder} is not the one lorasweep shipped: {', '.join(differ)} "
            "differ from objectives.tiny.SHIPPED_SHA256. Reinstall lorasweep (pip install "
            "--force-reinstall), or set model.base to another model."
        )


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def build(out: Path, log: Callable[[str], None] = print) -> dict[str, str]:
    """Build the tiny base from ``RECIPE`` into ``out``; returns each file's SHA-256."""
    out.mkdir(parents=True, exist_ok=True)
    _build(out, log)
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(out.iterdir())
        if path.is_file()
    }


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
    tokenizer.chat_template = CHAT_TEMPLATE
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
        ids = [*ids[: block - 1], eos]
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


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SHIPPED
    hashes = build(target)
    print(f"built {target}; record in objectives/tiny.py:\nSHIPPED_SHA256 = {hashes!r}")
