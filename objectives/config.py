"""What one trial needs to know, as typed, frozen values, and the metrics a trial can give.

The sweep file's model, data and eval sections are in specs.py (pydantic models, loaded when first
used: the command line's --help imports this module and need not wait for pydantic).
Nothing here knows about Optuna, MLflow or the CLI.
"""

from __future__ import annotations

import re
import string
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
    "bleu": "maximize",
    "accuracy": "maximize",
}

# Metrics that need greedy generation on the eval prompts (the expensive part of a trial).
GENERATION_METRICS = ("rouge1", "rouge2", "rougeL", "f1", "exact_match", "bleu", "accuracy")
# Metrics a trial reports at every evaluation while it trains: the learning curve a pruner reads.
# The first one is in every evaluation's report.
CURVE_METRICS = ("eval_loss", "eval_perplexity")


def curve_metric(objective: str) -> str:
    """The curve metric that stands for `objective` while a trial trains: the objective itself where
    the trial reports it at each evaluation, else eval_loss (generation comes only at the end)."""
    return objective if objective in CURVE_METRICS else CURVE_METRICS[0]


TINY_BASE_NAME = "tiny"  # model.base naming the embedded tiny Llama that objectives/tiny.py builds
BUILTIN_DATA_PREFIX = "builtin:"
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
WRONG_KIND_OF_FILE = (
    "data.path must be a .jsonl, .json, .csv or .parquet file, a dataset folder or a hub id, but got "
    "path={path!r}, a file of another kind. Save the rows as JSON Lines (one object per line) or CSV."
)


class InputError(ValueError):
    """User input that cannot work (a missing file, a template field the data lacks, ...).

    Raised in the project's error grammar; the CLI prints it without a traceback and exits 2."""


@dataclass(frozen=True)
class TrialSpec:
    """One trial: the resolved hyperparameters, split by the library that takes them."""

    training_args: dict[str, Any] = field(default_factory=dict)  # TrainingArguments fields
    lora_args: dict[str, Any] = field(default_factory=dict)  # LoraConfig fields
    # EarlyStoppingCallback fields (early_stopping_patience, ...); empty: train every step
    early_stopping: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    generate: bool = True  # compute the generation metrics after training


@dataclass(frozen=True)
class TextSplit:
    """A text_template read as prompt + response: the model is asked to generate `field` from the
    rendered text before it, and may write `end` (an end-of-turn marker) after it."""

    prompt_template: str
    field: str
    end: str


# What may follow a text_template's last field and still leave it at the end: whitespace and
# special-token markers such as <|eot_id|>, <|im_end|>, </s>, <end_of_turn>.
_END_MARKERS = re.compile(r"(\s|<\|?/?[\w.-]+\|?>)*")


def split_text_template(template: str) -> TextSplit | None:
    """The prompt is the template before its last field, the response that field; None (loss only)
    when the template has a single field, or text other than end markers after the last one."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        return None
    fields = [(i, name) for i, (_, name, _, _) in enumerate(parts) if name]
    if len(fields) < 2:
        return None
    last, name = fields[-1]
    end = "".join(literal for literal, *_ in parts[last + 1 :])
    if not _END_MARKERS.fullmatch(end):
        return None

    def escaped(literal: str) -> str:  # parse() unescapes {{ and }}; the prompt is a template again
        return literal.replace("{", "{{").replace("}", "}}")

    prompt = "".join(
        escaped(literal)
        + ("{" + f + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}" if f else "")
        for literal, f, spec, conv in parts[:last]
    ) + escaped(parts[last][0])
    return TextSplit(prompt, name, end.strip())


def template_fields(template: str, where: str = "template") -> list[str]:
    """The column names a str.format template uses."""
    try:
        return [field for _, field, _, _ in string.Formatter().parse(template) if field]
    except ValueError as e:
        raise InputError(
            f"{where} must be a str.format template, but got {template!r}: {e}. "
            "Write a literal brace as {{ or }}."
        ) from None
