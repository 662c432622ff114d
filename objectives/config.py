"""What one trial needs to know, as typed, frozen values.

search/ builds these from the sweep file; objectives/ only reads them. Nothing here knows about
Optuna, MLflow or the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# Every metric a trial can return, with the direction in which it improves. The study's objective
# is one or several of these.
METRICS: dict[str, Literal["minimize", "maximize"]] = {
    "eval_loss": "minimize",
    "eval_perplexity": "minimize",
    "rouge1": "maximize",
    "rouge2": "maximize",
    "rougeL": "maximize",
    "f1": "maximize",
    "exact_match": "maximize",
}

# Metrics that need greedy generation on the eval prompts (the expensive part of a trial).
GENERATION_METRICS = ("rouge1", "rouge2", "rougeL", "f1", "exact_match")

TINY_BASE_NAME = "tiny"  # model.base naming the embedded tiny Llama that objectives/tiny.py builds
BUILTIN_DATA_PREFIX = "builtin:"
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class InputError(ValueError):
    """User input that cannot work (a missing file, a template field the data lacks, ...).

    Raised in the project's error grammar; the CLI prints it without a traceback and exits 2."""


@dataclass(frozen=True)
class ModelSpec:
    base: str = TINY_BASE_NAME  # the built-in tiny model, a hub id or a local path
    method: Literal["lora", "qlora"] = "lora"
    target_modules: str | tuple[str, ...] = "all-linear"
    revision: str | None = None
    trust_remote_code: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"


@dataclass(frozen=True)
class DataSpec:
    """Defaults describe the built-in data set; a sweep file that names its own data starts from
    USER_DATA instead, so built-in templates never leak onto a user's columns."""

    path: str = "builtin:tone"  # local jsonl/json/csv/parquet file, a hub id, or builtin:NAME
    name: str | None = None  # hub configuration name
    train_split: str = "train"  # any `datasets` split expression, e.g. train[:80%]
    eval_split: str | None = None  # None: carve eval_fraction out of the train split
    eval_fraction: float = 0.2
    prompt_template: str | None = "Phrase: {phrase}\nTone:"
    response_template: str | None = " {tone}, about the {topic}"
    text_template: str | None = None  # Olive's single template: loss on every token, no generation
    label_column: str | None = "tone"  # macro-F1 and stratified split over this column
    max_length: int = 128  # tokens per example, prompt and response together
    seed: int = 0  # the eval split carve-out

    @property
    def has_prompts(self) -> bool:
        """Whether examples split into prompt and response (needed for generation metrics)."""
        return self.text_template is None


USER_DATA = DataSpec(path="", prompt_template=None, response_template=None, label_column=None)


@dataclass(frozen=True)
class EvalSpec:
    max_samples: int = 64  # eval prompts that are generated from (the rest only give loss)
    max_new_tokens: int = 16
    batch_size: int = 32  # generation batch
    f1: Literal["auto", "label", "token"] = "auto"
    log_samples: int = 20  # rows in the run's generations table


@dataclass(frozen=True)
class TrialSpec:
    """One trial: the resolved hyperparameters, split by the library that takes them."""

    training_args: dict[str, Any] = field(default_factory=dict)  # TrainingArguments fields
    lora_args: dict[str, Any] = field(default_factory=dict)  # LoraConfig fields
    # EarlyStoppingCallback fields (early_stopping_patience, ...); empty: train every step
    early_stopping: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    generate: bool = True  # compute the generation metrics after training
