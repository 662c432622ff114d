"""A trial's hyperparameters: which names exist, where each one goes, their defaults and checks.

The names are the ones users already know: the fields of transformers' TrainingArguments and of
peft's LoraConfig and the arguments of transformers' EarlyStoppingCallback, read from the installed
libraries so they never drift, plus the short aliases of the Olive material. Swapping the Trainer
or adding a library of knobs changes this file, not the study side.

transformers and peft are imported only where their answers are not known yet (_knobs.py keeps
the field names, type hints and verdicts of the installed versions): checking a sweep file's
parameters must not cost a torch import each time.
"""

from __future__ import annotations

import dataclasses
import inspect
import tempfile
import typing
from functools import cache
from typing import Any, Literal

from . import _knobs
from ._typing import check_type, did_you_mean
from .config import TrialSpec

ALIASES = {"lora_r": "r", "batch_size": "per_device_train_batch_size"}
BATCH_SIZE = "per_device_train_batch_size"  # the knob that must fit the train split

# Fixed settings every trial starts from; a sweep file's `train` section and search space override
# them. Sized for the embedded tiny model on a CPU: a trial takes seconds, not minutes.
DEFAULTS: dict[str, Any] = {
    "max_steps": 120,
    BATCH_SIZE: 16,
    "per_device_eval_batch_size": 32,
    "learning_rate": 1e-3,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "logging_steps": 10,
    "r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
}

# Fields lorasweep sets itself (where outputs go, what reports where), and secrets, which must never
# sit in a sweep file: they would land in params, tags and logs. Tokens come from the environment.
MANAGED = frozenset(
    {
        "output_dir",
        "logging_dir",
        "run_name",
        "report_to",
        "do_train",
        "do_eval",
        "do_predict",
        "push_to_hub",
        "hub_token",
        "hub_model_id",
        "hub_strategy",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
        "disable_tqdm",
        "use_cpu",
        "bf16",
        "fp16",
        "task_type",
        "peft_type",
        "base_model_name_or_path",
        "inference_mode",
        "revision",
        "peft_version",
        "auto_mapping",
        "include_num_input_tokens_seen",
        "seed",
        "data_seed",
        "logging_nan_inf_filter",
    }
)
# Where a managed field has a home in the sweep file, the error points there.
_INSTEAD = {
    "bf16": "model.precision",
    "fp16": "model.precision",
    "use_cpu": "model.device",
    "seed": "study.sampler.seed (trial n trains with seed + n)",
    "data_seed": "study.sampler.seed (trial n trains with seed + n)",
    "revision": "model.revision",
    "logging_nan_inf_filter": "nothing: a NaN or inf loss fails the trial at once",
}

Target = Literal["training", "lora", "early_stopping"]


def _read_libraries() -> dict[str, Any]:
    """Field names and type hints, read from the installed libraries (imports them: torch too)."""
    import peft
    import transformers

    hints = {
        **typing.get_type_hints(transformers.TrainingArguments),
        **typing.get_type_hints(peft.LoraConfig),
        **typing.get_type_hints(transformers.EarlyStoppingCallback.__init__),
    }
    return {
        "training": sorted(f.name for f in dataclasses.fields(transformers.TrainingArguments)),
        "lora": sorted(f.name for f in dataclasses.fields(peft.LoraConfig)),
        "early": sorted(inspect.signature(transformers.EarlyStoppingCallback).parameters),
        "hints": {name: _knobs.encode(hint) for name, hint in hints.items() if name != "return"},
    }


@cache
def _fields() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    knobs = _knobs.table(_read_libraries)  # cached per installed version: no import once known
    training, lora, early = (frozenset(knobs[k]) for k in ("training", "lora", "early"))
    return training - MANAGED, lora - MANAGED, early


@cache
def _hints() -> dict[str, Any]:
    return {name: _knobs.decode(hint) for name, hint in _knobs.table(_read_libraries)["hints"].items()}


def type_problem(name: str, value: Any) -> str | None:
    """Why `value` cannot go into field `name` (canonical), or None. The libraries' constructors
    don't check types, so a string max_steps would otherwise fail only inside a trial."""
    hint = _hints().get(name)
    if hint is None:
        return None
    ok, _, expected = check_type(value, hint)
    return None if ok else f"parameter {name} must be {expected}, but got {name}={value!r}."


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def spellings(name: str) -> list[str]:
    """A canonical name and its aliases: every way a sweep file may write it."""
    return [name, *(alias for alias, c in ALIASES.items() if c == name)]


def target_of(name: str) -> Target | None:
    """Where a (canonical) parameter goes, or None if no library knows it."""
    training, lora, early = _fields()
    if name in lora:
        return "lora"
    if name in training:
        return "training"
    if name in early:
        return "early_stopping"
    return None


def valid_names() -> list[str]:
    training, lora, early = _fields()
    return sorted(ALIASES) + sorted(lora) + sorted(early) + sorted(training)


def _grouped_names() -> str:
    training, lora, early = _fields()
    return (
        f"aliases: {', '.join(sorted(ALIASES))}; LoraConfig: {', '.join(sorted(lora))}; "
        f"EarlyStoppingCallback: {', '.join(sorted(early))}; "
        f"TrainingArguments: {', '.join(sorted(training))}"
    )


def unknown_name_message(name: str) -> str:
    """The error for a name no library knows, with a did-you-mean (the list of every valid name is
    valid_names_text(), said once however many names are wrong)."""
    if name in MANAGED:
        why = (
            "a secret: set it in the environment (HF_TOKEN), never in a sweep file"
            if "token" in name
            else f"set by lorasweep itself; use {_INSTEAD[name]}"
            if name in _INSTEAD
            else "set by lorasweep itself"
        )
        return f"parameter {name!r} must not be set in a sweep file, but got {name}: it is {why}."
    return (
        f"parameter names must be TrainingArguments, LoraConfig or EarlyStoppingCallback fields or an "
        f"alias, but got name={name!r}.{did_you_mean(name, valid_names(), n=3)}"
    )


def valid_names_text() -> str:
    """Every valid parameter name, by where it goes: said once under the unknown names' errors."""
    return f"Valid parameter names, by where they go: {_grouped_names()}."


def fixed_problems(fixed: dict[str, Any]) -> list[str]:
    """What TrainingArguments and LoraConfig say of these fixed values (canonical names): they know
    their own rules (a scheduler name, a dropout in [0, 1), ...). Asked once per set of values and
    installed versions (_knobs.verdict): a file checked before is checked again without torch."""
    routed = {
        target: {k: v for k, v in fixed.items() if target_of(k) == target} for target in ("training", "lora")
    }
    return _knobs.verdict(routed, lambda: _ask_libraries(routed))


def _ask_libraries(routed: dict[str, dict[str, Any]]) -> list[str]:
    import peft
    import transformers

    problems = []
    for cls, target in ((transformers.TrainingArguments, "training"), (peft.LoraConfig, "lora")):
        values = routed[target]
        extra = (
            {"output_dir": tempfile.gettempdir(), "report_to": "none", "use_cpu": True}
            if target == "training"
            else {}
        )
        kwargs: dict[str, Any] = {**extra, **values}  # checking these is what the call is for
        try:
            cls(**kwargs)
        except (TypeError, ValueError) as e:
            problems.append(
                f"the train settings must be valid {cls.__name__} values, but {cls.__name__} said: {e}"
            )
    return problems


def trial_spec(params: dict[str, Any], seed: int) -> TrialSpec:
    """A trial's resolved parameters (canonical names), each routed to the library that takes it."""

    def going_to(target: Target) -> dict[str, Any]:
        return {k: v for k, v in params.items() if target_of(k) == target}

    return TrialSpec(
        training_args=going_to("training"),
        lora_args=going_to("lora"),
        early_stopping=going_to("early_stopping"),
        seed=seed,
    )


def training_settings(training_args: dict[str, Any]) -> dict[str, Any]:
    """A trial's TrainingArguments before lorasweep's own (output, device, seed): evaluation every
    eval_steps, no checkpoints, and about five points on every learning curve."""
    settings = {"eval_strategy": "steps", "save_strategy": "no", **training_args}
    if settings.get("max_steps", -1) > 0:
        settings.setdefault("eval_steps", max(1, settings["max_steps"] // 5))
    return settings
