"""The sweep file's schema: one pydantic model per section, one field (with its description) per key.

The models say what a file may hold: keys, types, enums, defaults and bounds, and they are where a
new key is added. The model, data and eval sections are the trial side's own specs (ModelSpec,
DataSpec, EvalSpec in objectives/specs.py), validated here like the others; the promote section's
model is PromoteSpec itself. The JSON Schema editors read and the reference page are generated from
them (_reference.py). What the libraries decide at run time stays theirs: TrainingArguments and
LoraConfig knob names (train, search_space names) and Optuna's sampler and pruner options are
checked by _sweep.py's steps against the libraries themselves.

`check` validates one section and turns pydantic's errors into the project's grammar, each at its
line: "<key> must <rule>, but got <key>=<value>. <fix>".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, TypeVar, Union, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError
from pydantic import model_validator as _model_validator
from pydantic.config import JsonDict
from pydantic.fields import FieldInfo

from lorasweep.objectives import DEFAULTS, METRICS
from lorasweep.objectives.specs import DataSpec, EvalSpec, ModelSpec, Names, one_or_many
from lorasweep.objectives.specs import Spec as Section  # a section of the file: one config for all

from ..errors import Problems, unknown_key
from ..precisions import PRECISIONS, REGISTRY, default_max_perplexity_change
from ..selection import Criterion
from ..strategy import PRUNERS, SAMPLERS

if TYPE_CHECKING:  # names the libraries and registries hold, enums in the schema
    SamplerName: TypeAlias = str
    PrunerName: TypeAlias = str
    MetricName: TypeAlias = str
    PrecisionName: TypeAlias = str
else:
    SamplerName, PrunerName = Literal[tuple(SAMPLERS)], Literal[tuple(PRUNERS)]
    MetricName, PrecisionName = Literal[tuple(METRICS)], Literal[PRECISIONS]
Direction = Literal["minimize", "maximize"]

# A study's, a local experiment's and a promoted model's names become folder and file names
# (mlruns/artifacts/<experiment>, reports/<study>, exports/<model>/vK): one path segment, never `.` or
# `..`, and short enough that the names built from them stay under the file systems' 255 bytes.
NAME_PATTERN = r"[\w.-]+"
MAX_NAME_BYTES = 100


def name_problem(what: str, name: Any) -> str | None:
    """Why `name` cannot be a study's, a local MLflow experiment's or a promoted model's name (`what`
    says which), or None."""
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        return (
            f"{what} must use only letters, digits, '.', '-' and '_', but got name={name!r}. It names a "
            "folder: use a word such as demo-2, not a path."
        )
    if name in (".", ".."):
        return f"{what} must name a folder of its own, but got name={name!r}, a path. Use a word (e.g. demo)."
    if len(name.encode()) > MAX_NAME_BYTES:
        return (
            f"{what} must be at most {MAX_NAME_BYTES} characters (bytes in UTF-8), as it names files, "
            f"but got name={name[:20]!r}... ({len(name.encode())} bytes). Use a shorter name."
        )
    return None


_METRICS_TEXT = ", ".join(METRICS)


@dataclass(frozen=True)
class Rule:
    """What a field must be, said once for every way its value can be wrong (a bound, an item, a
    type), with the fix: "<key> must <must>, but got <key>=<value>. <fix>"."""

    must: str
    fix: str = ""


def _name_or_mapping(name: Any, mapping: type[BaseModel]) -> Any:
    """A name (`pruner: median`) or a mapping of the name and options (`pruner: {type: median, ...}`)."""
    return Annotated[
        Union[Annotated[name, Tag("#name")], Annotated[mapping, Tag(mapping.__name__)]],  # noqa: UP007
        Discriminator(lambda v: mapping.__name__ if isinstance(v, dict) else "#name"),
    ]


class SamplerOptions(Section):
    """`sampler: {type: tpe, seed: 0, ...}`: any other key is the Optuna sampler's own option."""

    model_config = ConfigDict(extra="allow")
    type: SamplerName = "tpe"
    """The Optuna sampler."""
    seed: int | None = 0
    """Seeds the sampler; null: a new stream each run."""


class PrunerOptions(Section):
    """`pruner: {type: median, ...}`: any other key is the Optuna pruner's own option."""

    model_config = ConfigDict(extra="allow")
    type: PrunerName
    """The pruner."""


if TYPE_CHECKING:
    Directions = Direction | tuple[Direction, ...]
    Sampler = str | SamplerOptions
    Pruner = str | PrunerOptions
else:
    Directions = one_or_many(Direction)
    Sampler = _name_or_mapping(SamplerName, SamplerOptions)
    Pruner = _name_or_mapping(PrunerName, PrunerOptions)
FOLDER_NAME: JsonDict = {"pattern": f"^{NAME_PATTERN}$"}


class Study(Section):
    name: str | None = Field(None, json_schema_extra=FOLDER_NAME)
    """The study, MLflow experiment and parent run name (default: the file's name without .yaml):
    letters, digits, '.', '-' and '_'."""
    metrics: Names = Field(
        "eval_loss",
        description=f"One objective, or a list for a multi-objective study: {_METRICS_TEXT}, or a metric "
        "of your own (named in eval.metrics, or given to the Python API's metrics=).",
    )
    metric: Names | None = None
    """The same as metrics (the Olive material's word)."""
    directions: Directions | None = None
    """minimize or maximize, one per metric (default: each metric's natural direction; for a metric of
    your own, the direction beside its path in eval.metrics)."""
    direction: Directions | None = None
    """The same as directions."""
    sampler: Sampler = "tpe"
    """The sampler, or {type: tpe, seed: 0} with the Optuna sampler's own plain-valued options beside
    them, e.g. {type: tpe, seed: 0, n_startup_trials: 4, multivariate: true}: checked against its
    signature."""
    n_trials: int = Field(10, ge=1)
    """The trial budget: finished trials, counted across reruns and workers, never exceeded."""
    timeout: Annotated[
        float | None, Rule("be a positive number of seconds", "Example: timeout: 3600 (an hour).")
    ] = Field(None, gt=0)
    """Seconds for one `run` (default: none)."""
    storage: str | None = None
    """An Optuna storage URL (default: the journal under mlruns/)."""
    pruner: Pruner | None = None
    """Stops trials whose learning curves lag: a name (curve is lorasweep's learning-curve pruner),
    or a mapping of type and the Optuna pruner's own options, e.g. {type: median, n_startup_trials: 3,
    n_warmup_steps: 20}; patient wraps another: {type: patient, patience: 2, wrapped: median}.
    Default: none."""
    retries: Annotated[int, Field(ge=0), Rule("be an integer >= 0", "0 never reruns a trial.")] = 1
    """Times a trial whose worker died or was interrupted runs again."""
    lr_range_test: bool = False
    """true: before the study's first trial, one learning-rate range test (as fastai's lr_find)
    narrows the searched learning_rate to the rates of steepest descent / 10 up to the lowest loss,
    within the declared range. A study that already has trials keeps the declared range."""
    warm_start: Annotated[str | None, Rule("be the name of an earlier study", "Fix it.")] = None
    """An earlier study in the same storage, on the same base: its 3 best complete configurations
    that fit this space run first, as this study's own trials; the earlier study is only read."""


class SearchStrategy(Section):
    """The Olive material's way to name the sampler and the budget."""

    type: SamplerName = "tpe"
    """The Optuna sampler (study.sampler)."""
    num_trials: int = Field(10, ge=1)
    """The trial budget (study.n_trials)."""


Plain = str | int | float | bool | None
# `when:` on a search_space entry: other entries' names -> the value, or list of values, each must take
Condition = Annotated[
    dict[str, Plain | list[Plain]] | None,
    Rule(
        "map other search_space parameters to a value or a list of values",
        "Example: when: {use_dora: false} or when: {r: [8, 16]}.",
    ),
]
WHEN = (
    "Sample this parameter only when other search_space parameters take these values, each a value or "
    "a list of values, all of them holding: {use_dora: false}, {r: [8, 16], use_dora: false}. A trial "
    "where they do not hold never samples it, records nothing for it and trains with the library's "
    "default (peft's, transformers'). Parents are sampled first; with conditions, TPE defaults to "
    "multivariate: true, group: true."
)


class _Range(Section):
    type: str
    low: float
    """The smallest value."""
    high: float
    """The largest value."""
    step: float | None = Field(None, gt=0)
    """Sample only low, low + step, ... (a grid sampler needs a step on every float range)."""
    log: bool = False
    """Sample on a log scale (low > 0; no step)."""
    when: Condition = Field(None, description=WHEN)

    @_model_validator(mode="after")
    def _ordered(self) -> _Range:
        low, high, step = self.low, self.high, self.step
        if low > high:
            raise ValueError(f"{{where}}.low must be <= high, but got low={low}, high={high}. Swap them.")
        if self.log and low <= 0:
            raise ValueError(
                f"{{where}}.low must be > 0 on a log scale, but got low={low}. "
                "Use a positive low or log: false."
            )
        if self.log and step is not None and not (isinstance(self, IntRange) and step == 1):
            raise ValueError(
                "{where} must not have both log and step (Optuna samples log ranges continuously), but "
                f"got log=true, step={step}. Drop one."
            )
        return self


class FloatRange(_Range):
    type: Literal["float"]
    """A range of numbers, mapped onto optuna.distributions.FloatDistribution."""


class IntRange(_Range):
    type: Literal["int"]
    """A range of integers (IntDistribution)."""
    low: int
    """The smallest value."""
    high: int
    """The largest value."""
    step: int | None = Field(None, gt=0)
    """Sample only low, low + step, ..."""


def _distinct(values: list[Plain]) -> list[Plain]:
    if len(set(map(repr, values))) != len(values):
        raise ValueError("values must be distinct")
    return values


class Choice(Section):
    type: Literal["choice", "categorical"]
    """One of the values (CategoricalDistribution); categorical is a synonym."""
    values: Annotated[
        list[Plain],
        Field(min_length=1),
        Rule("be a non-empty list of distinct plain values (numbers, strings, true or false)"),
        AfterValidator(_distinct),
    ]
    """The values to choose from."""
    when: Condition = Field(None, description=WHEN)


_RANGE_TAGS = {"float": "FloatRange", "int": "IntRange", "choice": "Choice", "categorical": "Choice"}


def _range_tag(value: Any) -> str | None:
    return _RANGE_TAGS.get(str(value.get("type"))) if isinstance(value, dict) else None


def _tagged(pick: Callable[[Any], str | None], *models: type[BaseModel]) -> Any:
    """One of `models`, the one `pick` names (each is tagged with its name, a key of MODELS)."""
    return Annotated[Union[tuple(Annotated[m, Tag(m.__name__)] for m in models)], Discriminator(pick)]  # noqa: UP007


if TYPE_CHECKING:
    Range = FloatRange | IntRange | Choice
else:
    Range = _tagged(_range_tag, FloatRange, IntRange, Choice)


class PerRank(Section):
    """lora_alpha tied to the rank: lora_alpha = per_rank x r, per_rank fixed or itself searched."""

    per_rank: Annotated[
        Union[  # noqa: UP007
            # An int stays one: per_rank 2 at r=4 gives lora_alpha 8, recorded as 8 (not 8.0).
            Annotated[int | float, Field(gt=0), Tag("#number")],
            Annotated[Range, Tag("#range")],
        ],
        Discriminator(lambda v: "#range" if isinstance(v, dict) else "#number"),
        Rule("be a positive number or a range", "Example: lora_alpha: {per_rank: 2}."),
    ]
    """lora_alpha only: k in lora_alpha = k x r, a number or itself a range to search."""


def entry_tag(value: Any) -> str | None:
    """The model a search_space entry is (its type picks; lora_alpha's {per_rank: k} has none), or None."""
    return _range_tag(value) or ("PerRank" if isinstance(value, dict) and "per_rank" in value else None)


if TYPE_CHECKING:
    SpaceEntry = Range | PerRank
else:
    SpaceEntry = _tagged(entry_tag, FloatRange, IntRange, Choice, PerRank)


class Tracking(Section):
    uri: str | None = None
    """The MLflow tracking URI (default: sqlite under mlruns/, or MLFLOW_TRACKING_URI)."""
    experiment: str | None = None
    """The MLflow experiment (default: the study's name); a local store's is a folder name."""


class SelectEntry(Section):
    metric: MetricName
    """A metric the trials recorded."""
    tolerance: Annotated[float, Field(ge=0), Rule("be a number >= 0 in the metric's units")] = 0.0
    """Trials within this much of the best (in the metric's units) count as tied on it."""


def _criteria(rule: tuple[str | SelectEntry, ...]) -> tuple[Criterion, ...]:
    return tuple(Criterion(c) if isinstance(c, str) else Criterion(c.metric, c.tolerance) for c in rule)


if TYPE_CHECKING:  # as the code reads it: _criteria makes each item a Criterion
    Select = tuple[Criterion, ...]
else:
    Select = Annotated[
        tuple[_name_or_mapping(MetricName, SelectEntry), ...], Field(strict=False), AfterValidator(_criteria)
    ]
_PER_PRECISION = "; ".join(f"{p.name}: {p.summary}" for p in REGISTRY.values())


def _folder_name(name: str) -> str:
    if (wrong := name_problem("{where}", name)) is not None:
        raise ValueError(wrong)
    return name


FolderName = Annotated[str, AfterValidator(_folder_name)]


# The promote section: which trial a study hands over (the rule, see selection.py), under what name,
# and the limits of the parity gate its ONNX exports must pass.
class Promote(Section):
    select: Select = Field(())
    """With several metrics, which Pareto trial `best` picks: a list of metrics, each a name or
    {metric, tolerance}. The trials within tolerance of the best on the first metric are kept, then
    those within tolerance on the next, and the best on the last wins. Example: [{metric: f1,
    tolerance: 0.01}, eval_loss]. Default: the study's metrics in order, tolerance 0."""
    # It names folders too (exports/NAME/vK, the .promote-NAME.lock): the study's name rule, whole.
    model_name: FolderName | None = Field(None, json_schema_extra=FOLDER_NAME)
    """The registered MLflow model promote adds versions to (default: the study's name)."""
    precisions: Annotated[
        list[PrecisionName],
        Field(min_length=1),
        Rule(f"be a list of {', '.join(PRECISIONS)}"),
        AfterValidator(lambda given: ["fp32", *(p for p in PRECISIONS[1:] if p in given)]),  # fp32 first
    ] = Field(list(PRECISIONS), description=f"The ONNX exports made and gated: {_PER_PRECISION}.")
    max_logit_diff: Annotated[
        float, Field(gt=0), Rule("be a number > 0", "fp32 exports usually differ by 1e-5 or less.")
    ] = 1e-3
    """The largest absolute logit difference between the fp32 export and PyTorch, over every eval row."""
    max_perplexity_change: Annotated[
        dict[PrecisionName, Annotated[float, Field(ge=0)]],
        Rule("map precisions to relative changes >= 0", "Example: {int8: 0.05, int4: 0.15} (5% and 15%)."),
        AfterValidator(lambda given: {**default_max_perplexity_change(), **given}),
    ] = Field(default_max_perplexity_change())
    """How far each export's eval perplexity may move from PyTorch's, relative (0.01 is 1%); a
    partial mapping keeps the other precisions' defaults."""
    max_eval_loss_change: Annotated[
        float, Field(ge=0), Rule("be a relative change >= 0", "Example: 0.01 (1%); raise it for bf16 trials.")
    ] = 0.01
    """How far the rebuilt PyTorch model's eval loss may move from the one its trial recorded,
    relative (measured: a CPU fp32 trial reproduces exactly, a bf16 one moves 0.04%)."""


_TRAIN_DEFAULTS = ", ".join(f"{k}: {v}" for k, v in DEFAULTS.items())


class SweepFile(Section):
    """A lorasweep sweep file: every section is optional."""

    model_config = ConfigDict(title="lorasweep sweep file")
    search_strategy: SearchStrategy | None = None
    """The Olive material's names for study.sampler and study.n_trials."""
    search_space: dict[str, SpaceEntry] = Field({})
    """Parameter names to ranges, each {type: float|int, low, high, log, step} or {type: choice,
    values}, each with an optional when: {parent: value} (sampled only where that holds); lora_alpha
    may also be {per_rank: k}. Parameter names are the fields of transformers'
    TrainingArguments and peft's LoraConfig, the arguments of EarlyStoppingCallback, and the aliases
    lora_r (r) and batch_size (per_device_train_batch_size); any other name is refused with a
    did-you-mean, as are fields lorasweep sets itself (output_dir, report_to, ...) and secrets."""
    study: Study | None = None
    """The Optuna study: objective, sampler, budget, pruner."""
    model: ModelSpec | None = None
    """The base model and how it is adapted."""
    data: DataSpec | None = None
    """The rows, and how they become prompts and responses."""
    train: dict[str, Any] = Field(
        {},
        description="Fixed values for every trial, under the same parameter names as search_space "
        f"(a name is searched or fixed, not both). Defaults: {_TRAIN_DEFAULTS}; evaluation every "
        "max_steps / 5 steps unless eval_steps says otherwise. early_stopping_patience and "
        "early_stopping_threshold stop a trial after that many evaluations without improvement and "
        "keep the best evaluation's adapter.",
        json_schema_extra={"examples": [{"max_steps": 60, "lora_dropout": 0.05}]},
    )
    eval: EvalSpec | None = None
    """Generation after training, for the generation metrics."""
    tracking: Tracking | None = None
    """Where MLflow records the runs."""
    promote: Promote | None = None
    """What `lorasweep promote` hands over, and the limits of the gate its ONNX exports must pass."""


SECTIONS: tuple[str, ...] = tuple(SweepFile.model_fields)
# The models a union tags its members with (the tags show in an error's location)
MODELS: dict[str, type[BaseModel]] = {
    m.__name__: m for m in (SamplerOptions, PrunerOptions, SelectEntry, FloatRange, IntRange, Choice, PerRank)
}

# The thing an enum names (by its names), where the key alone says less
_WHAT = {
    tuple(SAMPLERS): "the sampler",
    tuple(PRUNERS): "the pruner",
    tuple(METRICS): "a promote.select metric",
}
_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",  # a list kept as a tuple
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "null",
    "too_short": "a non-empty list",
    "finite_number": "a finite number",
    "missing": "given",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_SIGNS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}  # annotated_types' bounds, as pydantic keeps them
M = TypeVar("M", bound=BaseModel)


# What 0.1's checks let through in a file, and so may be in one stored with a study that ran: a key
# of the study section it did not use (seed, sampler_options) and numbers that are not finite.
_LET_THROUGH_BEFORE = {"extra_forbidden", "finite_number"}


def check(
    model: type[M], raw: Any, problems: Problems, where: tuple[Any, ...], partial: bool = True
) -> M | None:
    """`raw` as a `model`, with each problem added at its line under `where` (the key path in the
    file). `partial`: keys whose values are wrong fall back to their defaults and the rest is kept
    (so later checks still see them); else None on any problem."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        errors = error.errors()
    order = list(raw) if isinstance(raw, dict) else []
    errors.sort(key=lambda e: order.index(e["loc"][0]) if e["loc"] and e["loc"][0] in order else -1)
    for err in errors:
        if problems.stored and err["type"] in _LET_THROUGH_BEFORE:
            continue  # the key falls back to its default, as the study that ran in effect had it
        keys = tuple(p for p in err["loc"] if not _is_tag(p))
        problems.add(where + keys, _message(model, raw, err, where))
    bad = {e["loc"][0] for e in errors if e["loc"]}
    if not partial or not isinstance(raw, dict) or not bad:
        return None
    try:
        return model.model_validate({k: v for k, v in raw.items() if k not in bad})
    except ValidationError:  # a rule across keys: nothing is kept
        return None


def _is_tag(part: Any) -> bool:
    return isinstance(part, str) and (part.startswith("#") or part in MODELS)


def _message(model: type[BaseModel], raw: Any, err: Any, where: tuple[Any, ...]) -> str:
    loc, kind, ctx = err["loc"], err["type"], err.get("ctx", {})
    keys = [str(p) for p in loc if not _is_tag(p)]
    prefix = str(where[-1]) if where[0] == "search_space" else ".".join(map(str, where))
    dotted = ".".join([prefix, *keys])
    owner, name, field = _field_at(model, loc)
    if kind == "extra_forbidden":
        parent = ".".join([prefix, *keys[:-1]])
        return unknown_key(f"a key of {parent}", keys[-1], owner.model_fields if owner else [])
    if kind == "value_error" and "{where}" in str(ctx["error"]):  # a validator's own message, whole
        return str(ctx["error"]).removeprefix("Value error, ").replace("{where}", dotted)
    rule = next((m for m in (field.metadata if field else []) if isinstance(m, Rule)), None)
    if rule is not None and name is not None:
        at = keys.index(name) if name in keys else len(keys)
        value = _value_at(raw, keys[: at + 1])
        fix = f" {rule.fix}" if rule.fix else ""
        return f"{'.'.join([prefix, *keys[: at + 1]])} must {rule.must}, but got {name}={value!r}.{fix}"
    key, value = (keys[-1], err["input"]) if keys else (prefix, raw)
    if keys and keys[-1].isdigit():  # an item of a list: the list is what the user wrote
        key = name or keys[-2]
        value = _value_at(raw, keys[: keys.index(key) + 1])
        dotted = "each item of " + ".".join([prefix, *keys[: keys.index(key) + 1]])
    got = "but got none." if kind == "missing" else f"but got {key}={value!r}."
    if kind == "literal_error":
        names = re.findall(r"'([^']*)'", ctx["expected"])
        plain = ".".join(k for k in [prefix, *keys] if not k.isdigit())
        return unknown_key(_WHAT.get(tuple(names), plain), err["input"], names)
    if kind in _BOUNDS:
        number = "an integer" if field is not None and field.annotation in (int, int | None) else "a number"
        return f"{dotted} must be {number} {_bounds(field, kind, ctx)}, {got}"
    expected = _EXPECTED.get(kind, err["msg"].removeprefix("Input should be "))
    if field is not None and type(None) in get_args(field.annotation) and kind != "missing":
        expected += " or null"  # null is a value the key takes too (its default)
    return f"{dotted} must be {expected}, {got}"


def _bounds(field: FieldInfo | None, kind: str, ctx: dict[str, Any]) -> str:
    """The bound broken ("> 0"), or both ends where the field has two ("> 0 and < 1")."""
    metadata = field.metadata if field else []
    given = [(sign, getattr(m, attr, None)) for m in metadata for attr, sign in _SIGNS.items()]
    ends = [(sign, value) for sign, value in given if value is not None]
    if len(ends) < 2:
        ends = [(_BOUNDS[kind], next(iter(ctx.values())))]
    return " and ".join(f"{sign} {value:g}" for sign, value in ends)


def _field_at(
    model: type[BaseModel], loc: tuple[Any, ...]
) -> tuple[type[BaseModel] | None, str | None, FieldInfo | None]:
    """The model that holds the last key of `loc`, and that key's field where one declares it."""
    current: type[BaseModel] | None = model
    owner: type[BaseModel] | None = model
    name: str | None = None
    field: FieldInfo | None = None
    for part in loc:
        if _is_tag(part):
            current = MODELS.get(part, current)
        elif isinstance(part, str) and current is not None and part in current.model_fields:
            owner, name, field = current, part, current.model_fields[part]
            nested = field.annotation
            current = nested if isinstance(nested, type) and issubclass(nested, BaseModel) else None
        elif isinstance(part, str):
            owner = current
    return owner, name, field


def _value_at(raw: Any, keys: list[str]) -> Any:
    for key in keys:
        if isinstance(raw, dict):
            raw = raw.get(key)
        elif isinstance(raw, list) and key.isdigit() and int(key) < len(raw):
            raw = raw[int(key)]
    return raw
