"""Hand over only what was trained: a trial's run records the SHA-256 of every file of its adapter
and the identity of its base when the adapter is logged (Tracker.finish_trial), and promote and
export compare both with what they are about to load before they export anything.

An adapter changed after training (a file under the run's artifacts edited, replaced or added) or
a base that is no longer the one trained on is refused: the parity gate could not see it, since
the ONNX export and its PyTorch reference would both load the changed files. Runs logged before
this record have none; their hand-over goes on with a note (refusing would strand every study made
before), and the gate's eval-loss check still compares the rebuilt model with the trial's score.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from .errors import UserError
from .record import Provenance


def adapter_sha256(folder: Path) -> dict[str, str]:
    """Each file under `folder` (its path there, with /) and its SHA-256."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        found[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return found


def check_adapter(trial: int, recorded: Provenance, adapter: Path, log: Callable[[str], None]) -> None:
    """The downloaded adapter must hold the files the trial logged, byte for byte."""
    if not recorded.adapter_sha256:
        log(
            f"note: trial {trial}'s run records no adapter hashes (it was logged before lorasweep kept "
            "them): its adapter cannot be checked against what was trained; the gate's eval-loss check "
            "still compares it with the trial's score"
        )
        return
    found = adapter_sha256(adapter)
    for path, want in sorted(recorded.adapter_sha256.items()):
        got = found.get(path)
        if got is None:
            raise UserError(
                f"trial {trial}'s adapter must hold every file it logged, but adapter/{path} "
                f"(sha256={want}) is missing from its run. Hand over another trial, or train this one again."
            )
        if got != want:
            raise UserError(
                f"trial {trial}'s adapter/{path} must have the SHA-256 its run recorded when the trial "
                f"logged it, but got sha256={got} (recorded sha256={want}): the file changed after "
                "training. Hand over another trial, or train this one again."
            )
    extra = sorted(set(found) - set(recorded.adapter_sha256))
    if extra:
        raise UserError(
            f"trial {trial}'s adapter must hold only the files it logged, but got adapter/{extra[0]} "
            f"(sha256={found[extra[0]]}), which its run did not record. Hand over another trial, or "
            "train this one again."
        )


def check_base(
    trials: list[int], recorded: list[Provenance], loaded: str, log: Callable[[str], None]
) -> None:
    """The base the hand-over loaded must be the one each trial trained on."""
    for trial, provenance in zip(trials, recorded, strict=True):
        if provenance.base is None:
            if provenance.adapter_sha256:  # else check_adapter has said so
                log(f"note: trial {trial}'s run records no base identity: the base cannot be checked")
            continue
        if provenance.base != loaded:
            raise UserError(
                f"the base model must be the one trial {trial} was trained on, but got base={loaded!r} "
                f"(the trial recorded base={provenance.base!r}). Put the base back as it was trained "
                "(the same files, or model.revision), or train the trial again on this one."
            )
