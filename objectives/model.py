"""The base model (loaded once per worker) and the fresh LoRA adapter each trial puts on it."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils.hub import cached_file  # its home: transformers.utils does not declare the re-export

from .config import TINY_BASE_NAME, InputError
from .specs import ModelSpec

# Target-module presets. "all-linear" is peft's own; "attention" and "mlp" are found on the base
# itself (_preset_targets): every projection of its attention blocks, or of its MLP. Names differ
# by architecture: Llama/Qwen/Mistral/Gemma q/k/v/o_proj and gate/up/down_proj, Phi-3 qkv_proj and
# gate_up_proj, GPT-NeoX query_key_value and dense, OPT out_proj and fc1/fc2 (beside the attention,
# in the layer itself), GPT-2 c_attn and a c_proj in both blocks.
TARGET_PRESETS = ("all-linear", "attention", "mlp")


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32", "bf16" or "fp16"

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]


def place(spec: ModelSpec) -> Placement:
    """Resolve device and precision: CUDA when present, bf16 where the GPU has it, else fp16."""
    cuda = torch.cuda.is_available()
    device = ("cuda" if cuda else "cpu") if spec.device == "auto" else spec.device
    if device == "cuda" and not cuda:
        raise InputError(
            "model.device must name a device this machine has, but got device=cuda and "
            "no CUDA device is visible. Use device: auto."
        )
    if spec.method == "qlora" and device != "cuda":
        raise InputError(
            "model.method=qlora must run on CUDA (bitsandbytes loads the base in 4 bit "
            f"there only), but got device={device}. Use method: lora on this machine."
        )
    precision = spec.precision
    if precision == "auto":
        precision = "fp32" if device == "cpu" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    if device == "cpu" and precision == "fp16":
        raise InputError("model.precision must be fp32 or bf16 on the CPU, but got precision=fp16.")
    return Placement(device, precision)


def resolve_base(spec: ModelSpec) -> str:
    """The built-in tiny model is the shipped folder, once checked; anything else passes through."""
    if spec.base != TINY_BASE_NAME:
        return spec.base
    from .tiny import ensure_tiny_base

    return str(ensure_tiny_base())


def base_identity(base: str, revision: str | None = None) -> str:
    """What pins the bytes of the base `base` (as a sweep file names it) at `revision`: the built-in
    tiny base's shipped file hashes, a local folder's weights and config (SHA-256), a hub model's
    commit as the local cache resolves the revision (which a load has just brought up to date). Two
    equal identities load the same model; a trial's goes on its run, and a hand-over compares it with
    the base it loads."""
    if base == TINY_BASE_NAME:
        from .tiny import SHIPPED_SHA256  # the bytes ensure_tiny_base checks before every load

        shipped = json.dumps(SHIPPED_SHA256, sort_keys=True).encode()
        return f"tiny sha256:{hashlib.sha256(shipped).hexdigest()}"
    folder = Path(base)
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file() and _is_weights(p.name))
        stats = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        return f"folder sha256:{_folder_sha256(folder.resolve(), stats)}"
    return f"hub {base}@{_hub_commit(base, revision) or revision or 'main'}"


def adapter_base_identity(adapter: Path) -> str | None:
    """The identity of the base a trial's adapter folder names (adapter_config.json, as the sweep
    file named it); None when the folder names none (a runner of the user's may write any folder)."""
    path = adapter / "adapter_config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    return base_identity(base, config.get("revision")) if base else None


def _is_weights(name: str) -> bool:
    return name == "config.json" or name.endswith((".safetensors", ".bin"))


@functools.lru_cache(maxsize=8)  # per (folder, names, sizes, times): a worker hashes its base once
def _folder_sha256(folder: Path, stats: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stats:
        file_digest = hashlib.sha256()
        with open(folder / name, "rb") as f:
            while chunk := f.read(1 << 22):
                file_digest.update(chunk)
        digest.update(f"{name} {file_digest.hexdigest()}\n".encode())
    return digest.hexdigest()


def _hub_commit(base: str, revision: str | None) -> str | None:
    """The commit the local cache holds for the hub model at `revision` (refs/main by default)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(base, "config.json", revision=revision)
    except ValueError:  # not a hub id at all (a folder that is gone): no commit to name
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def tokenizer_at_hand(spec: ModelSpec) -> PreTrainedTokenizerBase | None:
    """The base's tokenizer if it loads without a download, a build or code of its own (for
    `validate`'s data check); None otherwise."""
    source = spec.base
    if spec.base == TINY_BASE_NAME:
        from .tiny import tiny_base_folder

        source = str(tiny_base_folder())
    try:
        return AutoTokenizer.from_pretrained(source, revision=spec.revision, local_files_only=True)
    except (OSError, ValueError):
        return None


def load_base(
    spec: ModelSpec, placement: Placement, log: Callable[[str], None] | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the base model and its tokenizer. Remote code runs only when the sweep file allows it."""
    source = resolve_base(spec)
    common: dict[str, Any] = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    try:  # no such folder or hub id, or offline: said once, either way
        remote_code = sorted(_remote_code_files(source, spec.revision))
    except (OSError, ValueError) as e:
        raise _not_found(spec, e) from e
    _allow_remote_code(spec, remote_code, log)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
    except (OSError, ValueError) as e:
        raise _not_found(spec, e) from e
    if tokenizer.pad_token_id is None:  # many causal LMs ship without one; eos is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = {"dtype": placement.dtype}
    if spec.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=placement.dtype,
        )
        kwargs["device_map"] = {"": 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **common, **kwargs)
    except (OSError, ValueError) as e:  # no weights, a config transformers cannot read
        raise InputError(
            f"model.base must hold a causal language model transformers can load, but got "
            f"base={spec.base!r}: {str(e).splitlines()[0]}"
        ) from e
    if spec.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    elif placement.device == "cuda":
        # transformers wraps PreTrainedModel.to in a decorator whose declared type loses `self`
        model.to("cuda")  # type: ignore[arg-type]
    model.config.use_cache = False  # training; generation turns it back on per call
    return model, tokenizer


def _not_found(spec: ModelSpec, error: Exception) -> InputError:
    return InputError(
        f"model.base must be 'tiny', a local model folder or a reachable hub id, but "
        f"got base={spec.base!r}: {str(error).splitlines()[0]}"
    )


def _allow_remote_code(spec: ModelSpec, files: list[str], log: Callable[[str], None] | None) -> None:
    """A model whose config names its own code (auto_map) runs that code when it loads: refused
    unless the sweep file says model.trust_remote_code, and named when it does."""
    if not files:
        return
    if not spec.trust_remote_code:
        raise InputError(
            f"model.base must load without running code of its own, but got base={spec.base!r}, whose "
            f"config names {', '.join(files)}. Read them, and set model.trust_remote_code: true to run "
            "them; or use a model transformers supports natively."
        )
    if log is not None:
        log(f"note: model.base {spec.base} runs its own code: {', '.join(files)} (model.trust_remote_code)")


def _remote_code_files(source: str, revision: str | None) -> set[str]:
    """The Python files that the config and the tokenizer config name in auto_map."""
    files = set()
    for name in ("config.json", "tokenizer_config.json"):
        path = cached_file(source, name, revision=revision, _raise_exceptions_for_missing_entries=False)
        if path is None:
            continue
        auto_map = json.loads(Path(path).read_text(encoding="utf-8")).get("auto_map") or {}
        for target in auto_map.values():
            for reference in target if isinstance(target, list) else [target]:
                if reference:  # "module.Class", or "repo--module.Class" for code from another repo
                    files.add(reference.split("--")[-1].rsplit(".", 1)[0] + ".py")
    return files


def add_adapter(base: PreTrainedModel, spec: ModelSpec, lora_args: dict[str, Any]) -> PeftModel:
    """Put a fresh LoRA adapter on the base. `target_modules` may be a preset, a list, or searched."""
    args = dict(lora_args)
    targets = _peft_targets(args.pop("target_modules", spec.target_modules), base)
    config = LoraConfig(task_type=TaskType.CAUSAL_LM, target_modules=targets, **args)
    return get_peft_model(base, config)


def check_targets(base: PreTrainedModel, spec: ModelSpec) -> None:
    """model.target_modules must name modules the base has (as peft matches them): otherwise every
    trial would fail the same way. Said once, before any trial, with the names the base offers."""
    targets = _peft_targets(spec.target_modules, base)
    if targets == "all-linear":
        return
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in base.named_modules() if _is_linear(m)})
    if spec.target_modules in TARGET_PRESETS and not targets:
        raise InputError(
            f"model.target_modules={spec.target_modules} must find {spec.target_modules} projections in the "
            f"base model, but base={spec.base!r} ({type(base).__name__}) has none that lorasweep recognizes. "
            f"Its linear layers are {', '.join(linear)}. Name some of these, or use all-linear."
        )
    names = [name for name, _ in base.named_modules() if name]
    if isinstance(targets, str):  # a regular expression over full module paths
        found = any(re.fullmatch(targets, name) for name in names)
    else:
        found = any(name == t or name.endswith("." + t) for name in names for t in targets)
    if not found:
        raise InputError(
            f"model.target_modules must name modules of the base model, but got "
            f"target_modules={spec.target_modules!r}, which matches none of base={spec.base!r}'s. Its "
            f"linear layers are {', '.join(linear)}. Name some of these, or use all-linear."
        )


def _peft_targets(targets: str | tuple[str, ...] | list[str], base: torch.nn.Module) -> str | list[str]:
    """A preset, plain names or a regular expression, as peft's LoraConfig takes them."""
    if targets in ("attention", "mlp"):
        return _preset_targets(base, targets)
    if isinstance(targets, str):
        # Searched values are strings, so "q_proj" or "q_proj,v_proj" name modules here; peft
        # would read any string as a regex over full module paths, which "q_proj" never matches.
        plain_names = re.fullmatch(r"[\w.]+(\s*,\s*[\w.]+)*", targets) and targets not in TARGET_PRESETS
        return [t.strip() for t in targets.split(",")] if plain_names else targets
    return list(targets)


def _preset_targets(base: torch.nn.Module, preset: str) -> list[str]:
    """The linear layers of the base's attention blocks (or MLPs), told apart by the class of the
    module that holds them (LlamaAttention, GPT2MLP, ...), as peft suffixes: "attn.c_proj", not
    "c_proj", which GPT-2's MLP has too. OPT and its kin keep fc1/fc2 in the layer itself."""
    found = set()
    for name, module in base.named_modules():
        if not _is_linear(module) or "." not in name:
            continue
        holder_name, leaf = name.rsplit(".", 1)
        holder = type(base.get_submodule(holder_name)).__name__
        if "Attention" in holder or holder.endswith("Attn"):
            kind, suffix = "attention", f"{holder_name.rsplit('.', 1)[-1]}.{leaf}"
        elif "MLP" in holder or "FeedForward" in holder:
            kind, suffix = "mlp", f"{holder_name.rsplit('.', 1)[-1]}.{leaf}"
        elif leaf in ("fc1", "fc2"):
            kind, suffix = "mlp", leaf
        else:
            continue
        if kind == preset:
            found.add(suffix)
    return sorted(found)


def _is_linear(module: torch.nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    return isinstance(module, (torch.nn.Linear, Conv1D))


def remove_adapter(model: PeftModel) -> PreTrainedModel:
    """Take the adapter off again (unmerged), leaving the base exactly as it was loaded."""
    return model.unload()
