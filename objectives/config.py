"""What one trial needs to know, as typed, frozen values, and the metrics a trial can give.

ModelSpec, DataSpec and EvalSpec are the sweep file's model, data and eval sections themselves
(frozen pydantic models: each field's docstring is the key's description in the generated schema);
search/sweepfile validates a file's sections into them; objectives/ reads them. DataSpec also says
what is wrong with its values taken together (`problems()`), beside the fields it constrains.
Nothing here knows about Optuna, MLflow or the CLI.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Strict, Tag

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


class Spec(BaseModel):
    """A section of the sweep file, as the code that runs reads it: its keys are its fields, each
    described by the docstring under it (the JSON Schema and the reference page are generated from
    them, search/sweepfile/_reference.py)."""

    # A number in a sweep file is finite: NaN fails every comparison (a gate no export passes), and
    # an infinite tolerance or multiplier is no limit at all.
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, allow_inf_nan=False, use_attribute_docstrings=True
    )


def one_or_many(item: Any) -> Any:
    """A value or a list of them (`metric: f1`, `metrics: [f1, eval_loss]`); a list is kept as a tuple
    (a spec is frozen, and hashed). The tags keep pydantic from reporting a wrong value twice."""
    return Annotated[
        Union[Annotated[item, Tag("#one")], Annotated[tuple[item, ...], Strict(False), Tag("#list")]],  # noqa: UP007
        Discriminator(lambda v: "#list" if isinstance(v, list | tuple) else "#one"),
    ]


if TYPE_CHECKING:
    Names = str | tuple[str, ...]
else:
    Names = one_or_many(str)
AtLeast1 = Annotated[int, Field(ge=1)]


class ModelSpec(Spec):
    base: str = TINY_BASE_NAME
    """tiny (the built-in tiny Llama), a hub id, or a local folder."""
    method: Literal["lora", "qlora"] = "lora"
    """lora, or qlora (a 4-bit base through bitsandbytes; CUDA only)."""
    target_modules: Names = "all-linear"
    """all-linear, attention, mlp (found on the base itself), or a list of module names. Searched as
    target_modules in search_space, a choice value such as "q_proj,v_proj" names modules."""
    revision: str | None = None
    """The hub revision (a branch, tag or commit), passed to from_pretrained."""
    trust_remote_code: bool = False
    """A base whose config names code of its own (auto_map) is refused unless true."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where trials train; auto: CUDA where present."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 where the GPU has it, else fp16; fp32 on the CPU."""


# The defaults describe the built-in data set; a sweep file that names its own data starts from
# USER_DATA instead, so built-in templates never leak onto a user's columns. (No docstring: the
# schema would show it.)
class DataSpec(Spec):
    path: str = "builtin:tone"
    """A local .jsonl/.json/.csv/.parquet file (relative to the sweep file), a dataset folder, a hub id,
    a URL, builtin:tone or builtin:tone_chat (the same rows as conversations)."""
    name: str | None = None
    """The hub dataset's configuration name."""
    train_split: str = "train"
    """A `datasets` split expression such as train[:80%]."""
    eval_split: str | None = None
    """The eval split; none: eval_fraction of train is carved out, stratified on the label."""
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    """The share of the train split carved out for eval when there is no eval_split."""
    # A few thousand rows estimate the loss as well as forty thousand.
    max_eval_rows: AtLeast1 = 2000
    """Eval rows the loss is computed over at every evaluation: a larger eval split is sampled,
    seeded by data.seed, the same rows for every trial."""
    prompt_template: str | None = "Phrase: {phrase}\nTone:"
    """A str.format template over the columns: the prompt. With no template at all, rows carry their
    turns (a messages column, or prompt and completion) and the tokenizer's chat template renders them."""
    response_template: str | None = " {tone}, about the {topic}"
    """The response, a str.format template; the loss is on its tokens only."""
    text_template: str | None = None
    """The Olive material's single template instead of the pair: loss on every token; when its last
    field ends it, the text before that field is the prompt for the generation metrics."""
    label_column: str | None = "tone"
    """The column macro-F1 and the stratified split use (none for your own data)."""
    max_length: AtLeast1 = 128
    """Tokens per example, prompt and response together; generation prompts keep their last
    max_length tokens."""
    seed: int = 0
    """Seeds the eval carve-out and the sample of max_eval_rows."""

    @property
    def is_url(self) -> bool:
        """A data file on a server (https://.../rows.jsonl): read by `datasets` as it is."""
        return re.match(r"[a-zA-Z][\w+.-]*://", self.path) is not None

    @property
    def has_prompts(self) -> bool:
        """Whether examples split into prompt and response (needed for generation metrics)."""
        return self.text_template is None or self.text_split is not None

    @property
    def conversational(self) -> bool:
        """No template at all: the rows carry their own turns (a `messages` column, or `prompt` and
        `completion`), which the tokenizer's chat template renders."""
        return self.text_template is None and self.prompt_template is None and self.response_template is None

    @property
    def text_split(self) -> TextSplit | None:
        """How a text_template splits for generation, if it does (split_text_template)."""
        return split_text_template(self.text_template) if self.text_template is not None else None

    def problems(self) -> list[tuple[str | None, str]]:
        """(field, what is wrong) for each value that cannot work; None: the section as a whole."""
        found: list[tuple[str | None, str]] = []  # bounds are the sweep file's (search/sweepfile)
        for key in ("prompt_template", "response_template", "text_template"):
            try:
                template_fields(getattr(self, key) or "", f"data.{key}")
            except InputError as e:
                found.append((key, str(e)))
        if self.text_template is None and bool(self.prompt_template) != bool(self.response_template):
            given = [k for k in ("prompt_template", "response_template") if getattr(self, k)]
            found.append(
                (
                    None,
                    "data must give prompt_template and response_template together, text_template "
                    f"alone, or neither (rows of messages, or prompt/completion), but got {given[0]} alone.",
                )
            )
        return found


USER_DATA = DataSpec(path="", prompt_template=None, response_template=None, label_column=None)


class EvalSpec(Spec):
    max_samples: AtLeast1 = 64
    """Eval prompts generated from for the generation metrics (ROUGE, F1, exact match, BLEU...)."""
    max_new_tokens: AtLeast1 = 16
    """The generation cap, in tokens."""
    batch_size: AtLeast1 = 32
    """The eval-loss batch and the smallest generation batch; generation takes up to 256 prompts at
    once where memory holds them."""
    f1: Literal["auto", "label", "token"] = "auto"
    """auto: macro-F1 over labels when a label column is named or the responses form a small closed
    set, token F1 otherwise; or force label / token."""
    log_samples: int = 20
    """Rows in each run's generations.json table."""


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
