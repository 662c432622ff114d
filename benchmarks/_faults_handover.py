"""The faults of the hand-over (promote, export): an adapter altered after its trial, promotes that
race or collide, an MLflow store started afresh under old exports, an architecture ONNX Runtime's
Model Builder does not know."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from _faults_harness import (
    FP32,
    MICRO_BASE,
    STUDY,
    Done,
    Row,
    client,
    cut,
    ended,
    finished,
    lorasweep,
    spawn,
    start,
    sweep,
)

SHA256 = re.compile(r"\b[0-9a-f]{64}\b")
LOGGED = re.compile(r"[WIEF]\d{4} ")  # a line of glog-style library logging


def _names_file_and_hashes(done: Done) -> bool:
    """One line on stderr, naming the adapter file and two different SHA-256 hashes."""
    lines = [line for line in done.err if line.strip()]
    named = len(lines) == 1 and "adapter_model.safetensors" in lines[0]
    return named and len(set(SHA256.findall(lines[0]))) == 2


def _champion(folder: Path, name: str = STUDY) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return f"v{client(folder).get_model_version_by_alias(name, 'champion').version}"
    except MlflowException:
        return "none"


def _versions(folder: Path, name: str = STUDY) -> int:
    return len(client(folder).search_model_versions(f"name = '{name}'"))


def _digest(folder: Path) -> str:
    """Of every file's name and bytes under `folder`."""
    sha = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        sha.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return sha.hexdigest()


def adapter_altered(folder: Path) -> Row:
    """Every lora_B of trial 0's stored adapter negated (same shapes, same size: only its hash tells)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    start(folder, 2, sweep(2, more=FP32))
    run_id = finished(folder)[0]
    (adapter,) = folder.glob(f"mlruns/artifacts/*/{run_id}/artifacts/adapter/adapter_model.safetensors")
    with safe_open(adapter, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # a safe_open has no __iter__
        metadata = f.metadata()
    save_file({k: -t if "lora_B" in k else t for k, t in tensors.items()}, adapter, metadata=metadata)
    done = [
        lorasweep(folder, "promote", "--trial", "0"),
        lorasweep(folder, "export", "--trial", "0", "--out", "X"),
        lorasweep(folder, "export", "--top", "2", "--out", "Y"),
    ]
    written = [
        f"{name}/ ({sum(p.is_file() for p in (folder / name).rglob('*'))} files)"
        for name in ("X", "Y", "exports")
        if (folder / name).exists()
    ]
    return Row(
        "trial 0's adapter_model.safetensors altered (lora_B negated); `promote --trial 0`, "
        "`export --trial 0`, `export --top 2`",
        f"exits {[d.code for d in done]}; one line naming the file and both hashes: "
        f"{[_names_file_and_hashes(d) for d in done]}: {done[0].first()}",
        "-",
        "-",
        f"{_versions(folder)} versions, champion {_champion(folder)}, export folders written: "
        f"{', '.join(written) or 'none'}",
    )


def _outcome(done: Done) -> str:
    """A promote's result line (registered, champion, or what it said instead) and its exit."""
    said = [line for line in done.out if line.strip() and not line.startswith(("ms/token", "parity", " "))]
    result = said[-1] if said else (done.shown[0] if done.shown else "-")
    return f'exit {done.code}, "{cut(result, 110)}"'


def promotes(folder: Path) -> list[Row]:
    """Three hand-overs in one folder, each on what the one before left: two promotes at once; a
    second study promoting to the first's model name; the MLflow store removed under its exports."""
    text = sweep(2, more=f"promote: {{precisions: [fp32], model_name: {STUDY}}}\n")
    start(folder, 2, text)
    both = [ended(p) for p in [spawn(folder, "promote", out=True) for _ in range(2)]]
    at_once = Row(
        "two `promote` of one study started at once",
        "; ".join(_outcome(d) + (" (a traceback)" if d.traceback else "") for d in both),
        "-",
        "-",
        f"{_versions(folder)} version(s), champion {_champion(folder)}",
    )

    champion = _champion(folder)
    assert lorasweep(folder, "-q", "run", "s.yaml", "--study", "other").code == 0
    other = lorasweep(folder, "promote", "--study", "other")
    collide = Row(
        f"a second study promotes to the same `promote.model_name` ({STUDY})",
        other.first(),
        "-",
        "-",
        f"{_versions(folder)} version(s), champion {_champion(folder)} (was {champion})",
    )

    v1 = folder / "exports" / STUDY / "v1"
    kept = _digest(v1)
    shutil.rmtree(folder / "mlruns")
    assert lorasweep(folder, "-q", "run", "s.yaml").code == 0
    again = lorasweep(folder, "promote")
    now = sorted(p.name for p in v1.parent.iterdir())
    afresh = Row(
        "`rm -rf mlruns`, a new sweep, `promote` (exports/faults/v1 is the old store's)",
        again.first() + f"; {_outcome(again)}",
        "-",
        "-",
        f"the old v1 {'unchanged' if v1.exists() and _digest(v1) == kept else 'overwritten'}; "
        f"exports/{STUDY}/ holds {', '.join(now)}",
    )
    return [at_once, collide, afresh]


def phi_export(folder: Path) -> Row:
    """A random-init Phi-2 (model_type phi) with the micro base's tokenizer: export, then promote."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()  # "Writing model shards" on this script's stderr

    tokenizer = AutoTokenizer.from_pretrained(MICRO_BASE)
    pad = tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    config = AutoConfig.for_model(
        "phi",
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(folder / "phi")
    tokenizer.save_pretrained(folder / "phi")
    start(folder, 1, sweep(1, base=folder / "phi", more=FP32))
    export = lorasweep(folder, "export", "--out", "X")
    promote = lorasweep(folder, "promote")
    return Row(
        "`export`, then `promote`, of a random-init Phi-2 (model_type phi)",
        f"export: {_fallback(export)}",
        "-",
        "-",
        f"promote: {_fallback(promote)}; {_outcome(promote)}; {_versions(folder)} version(s), "
        f"champion {_champion(folder)}",
    )


def _fallback(done: Done) -> str:
    """Its exit, the line that says which exporter it used instead (else its first), and how many
    lines of library logging (torch's `W1203 12:00:00.0 ...`) it let through."""
    said = done.out + done.printed
    named = [x for x in said if "Model Builder" in x or "dynamo" in x]
    line = (named or done.shown or [""])[0]
    raw = sum(bool(LOGGED.match(x)) for x in done.printed)
    return f"{done.exit()}" + (f', "{cut(line)}"' if line else "") + f"; {raw} raw library log lines"
