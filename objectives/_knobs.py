"""The libraries' knobs as data, so that checking a sweep file's parameters costs no torch import.

Naming a parameter (is `lora_dropout` a LoraConfig field?), checking its type (an integer
max_steps) and asking TrainingArguments and LoraConfig whether a set of fixed values is valid all
need transformers and peft, whose import brings torch: about 5 CPU-seconds on 2 cores, paid by
`lorasweep validate` and every `run` before its first line of output. What the installed versions
answer does not change until they do, so it is kept as JSON in the cache folder, keyed by those
versions: the field names and their type hints once per version, and the libraries' verdict on
each set of fixed values once per set. A cache that cannot be read or written, or that holds
JSON of another shape (written by hand, or by another program), is recomputed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import os
import tempfile
import types
import typing
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Literal

FORMAT = 1  # bump when what is stored, or how hints are encoded, changes
MAX_VERDICTS = 500  # sets of fixed values remembered per library version (a few hundred bytes each)


def cache_root() -> Path:
    """lorasweep's cache folder: $LORASWEEP_CACHE, else ~/.cache/lorasweep."""
    return Path(os.environ.get("LORASWEEP_CACHE") or Path.home() / ".cache" / "lorasweep")


def _stem() -> str:
    from importlib.metadata import version  # 15 ms to import: not for `lorasweep --help`

    return f"knobs{FORMAT}-transformers-{version('transformers')}-peft-{version('peft')}"


@cache
def table(read_libraries: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """{training, lora, early: [field names], hints: {name: encoded hint}} for the installed
    versions: from the cache, else from `read_libraries()` (which imports them), then cached."""
    path = cache_root() / f"{_stem()}.json"
    stored = _read(path)
    if _is_table(stored):
        return stored
    fresh = read_libraries()
    _write(path, fresh)
    return fresh


def verdict(values: dict[str, Any], judge: Callable[[], list[str]]) -> list[str]:
    """What `judge()` (the libraries, asked about `values`) says, remembered per set of values."""
    path = cache_root() / f"{_stem()}-verdicts.json"
    key = hashlib.sha256(json.dumps(values, sort_keys=True, default=repr).encode()).hexdigest()
    known = _read(path)
    if not _is_verdicts(known):
        known = {}
    if key in known:
        return known[key]
    problems = judge()
    known[key] = problems
    _write(path, dict(list(known.items())[-MAX_VERDICTS:]))
    return problems


def encode(hint: Any) -> Any:
    """A type hint as JSON, keeping what objectives._typing.check_type tells apart; anything it
    does not check (enums, dicts, lists) becomes "any", which it accepts as it accepts them."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return {"literal": list(args)} if all(isinstance(a, (str, int, float, bool)) for a in args) else "any"
    if origin in (typing.Union, types.UnionType):
        return {"union": [encode(a) for a in args]}
    if hint is type(None):
        return "none"
    if origin is tuple:
        return "strings"
    for kind in (bool, int, float, str):
        if hint is kind:
            return kind.__name__
    return "any"


def decode(encoded: Any) -> Any:
    if isinstance(encoded, dict) and "literal" in encoded:
        return Literal[tuple(encoded["literal"])]
    if isinstance(encoded, dict) and "union" in encoded:
        return functools.reduce(operator.or_, (decode(a) for a in encoded["union"]))
    simple = {"none": type(None), "strings": tuple[str, ...], "bool": bool, "int": int, "float": float}
    return {**simple, "str": str}.get(encoded, Any)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_table(stored: Any) -> bool:
    """What `table` writes: three lists of field names and a mapping of hints."""
    return (
        isinstance(stored, dict)
        and all(_strings(stored.get(k)) for k in ("training", "lora", "early"))
        and isinstance(stored.get("hints"), dict)
    )


def _is_verdicts(stored: Any) -> bool:
    """What `verdict` writes: a key per set of values -> the problems the libraries found."""
    return isinstance(stored, dict) and all(_strings(v) for v in stored.values())


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write(path: Path, content: Any) -> None:
    """Atomically (a reader never sees half a file); a read-only cache folder is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            json.dump(content, f)
        os.replace(f.name, path)
    except OSError:
        pass
