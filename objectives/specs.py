"""The sweep file's model, data and eval sections, as the code that runs reads them: frozen pydantic
models whose field docstrings are the keys' descriptions in the generated schema. search/sweepfile
validates a file's sections into them; objectives/ reads them. DataSpec also says what is wrong with
its values taken together (`problems()`), beside the fields it constrains.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Strict, Tag

from .config import TINY_BASE_NAME, InputError, TextSplit, split_text_template, template_fields


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


class MetricPath(Spec):
    path: str
    """The function as module:function: a module file beside the sweep file (my_metrics.py gives
    my_metrics:tone_hit) or an installed module. It takes (outputs, references), two lists of
    strings, and returns a number."""
    direction: Literal["minimize", "maximize"] | None = None
    """Which way the metric improves: its direction as a study objective unless study.directions says."""


if TYPE_CHECKING:
    PathOrMapping = str | MetricPath
else:  # tagged, so that pydantic reports a wrong value once, from the form it was written in
    PathOrMapping = Annotated[
        Union[Annotated[str, Tag("#path")], Annotated[MetricPath, Tag("#mapping")]],  # noqa: UP007
        Discriminator(lambda v: "#path" if isinstance(v, str) else "#mapping"),
    ]


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
    metrics: dict[str, PathOrMapping] = Field({})
    """Metrics of your own, by name: "module:function" or {path: "module:function", direction:
    maximize}. Each function scores the same generations as ROUGE and F1, fn(outputs, references) ->
    float; its module is imported from the sweep file's folder first, then from the installed
    packages, in every process that runs trials. A name may be a study metric."""

    def metric_paths(self) -> dict[str, str]:
        """Each metric of the user's own: name -> module:function."""
        return {n: m if isinstance(m, str) else m.path for n, m in self.metrics.items()}

    def metric_directions(self) -> dict[str, Literal["minimize", "maximize"]]:
        """The directions given with the metrics of the user's own."""
        return {n: m.direction for n, m in self.metrics.items() if isinstance(m, MetricPath) and m.direction}
