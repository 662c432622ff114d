"""The base model's scores, kept between studies.

Every study scores its base model once, before any trial (what each trial has to beat): 0.8 s for
the built-in tiny base, minutes for a real one. The scores depend only on the base's bytes, the data
and how it is split and templated, the evaluation settings, where the model runs and the libraries
that compute them, so a second study on the same base and data takes them from lorasweep's cache
folder (`base-scores.json`) instead. The key hashes all of those (the base by
`objectives.base_identity`, the data file by its SHA-256). Data that is not pinned by its bytes here
(a hub data set, a URL) and custom metrics (Python functions this process cannot fingerprint) are
never cached. A cache that cannot be read or holds anything but scores is rebuilt; one that cannot be
written is not an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata, resources
from pathlib import Path

from filelock import FileLock

from lorasweep.objectives import BUILTIN_DATA_PREFIX, METRICS, cache_root

from .sweepfile import Sweep

FORMAT = 1  # bump when what a key covers changes
KEPT = 200  # entries remembered (a few hundred bytes each); the oldest go first


def key(sweep: Sweep, device: str) -> str | None:
    """The cache key of `sweep`'s base scores on `device`; None where they may not be cached."""
    from lorasweep.objectives import base_identity  # transformers: loaded by the run that asks

    data = _data_sha256(sweep.data.path)
    if data is None:
        return None
    versions = {name: _version(name) for name in ("lorasweep", "torch", "transformers", "peft")}
    described = {
        "format": FORMAT,
        "base": base_identity(sweep.model.base, sweep.model.revision),
        "model": sweep.model.model_dump(),
        "data": sweep.data.model_dump(),
        "data_sha256": data,
        "eval": sweep.eval.model_dump(),
        "metrics": sorted(METRICS),
        "device": device,
        "versions": versions,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=repr).encode()).hexdigest()


def recall(key: str) -> dict[str, float] | None:
    return _read().get(key)


def remember(key: str, scores: dict[str, float]) -> None:
    path = _path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            kept = _read()
            kept.pop(key, None)
            kept[key] = scores
            _write(path, dict(list(kept.items())[-KEPT:]))
    except OSError:
        pass  # a read-only cache folder: the next study scores its base again


def _path() -> Path:
    return cache_root() / "base-scores.json"


def _read() -> dict[str, dict[str, float]]:
    try:
        stored = json.loads(_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict):
        return {}
    return {
        k: v
        for k, v in stored.items()
        if isinstance(v, dict)
        and all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in v.values())
    }


def _write(path: Path, content: dict) -> None:
    """Atomically: a reader never sees half a file."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(content, f)
    os.replace(f.name, path)


def _data_sha256(path: str) -> str | None:
    """The data's bytes: a local file's, or the built-in set's as the trial side ships it."""
    if path.startswith(BUILTIN_DATA_PREFIX):
        # The assets folder is data, not code: reading it does not reach around the trial side's API.
        asset = (
            resources.files("lorasweep.objectives")
            / "assets"
            / f"{path.removeprefix(BUILTIN_DATA_PREFIX)}.jsonl"
        )
        return hashlib.sha256(asset.read_bytes()).hexdigest() if asset.is_file() else None
    file = Path(path)
    if not file.is_file():
        return None  # a hub data set or a URL: not pinned by bytes this process holds
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"
