"""Handing over a trial: from a finished sweep to `models:/NAME@champion` and an ONNX folder.

    promote:  pick the trial -> load base + adapter -> export ONNX (fp32, then Olive's int8/int4)
              -> parity and speed against PyTorch -> register a version (pyfunc + ONNX + evidence)
              -> move the `champion` alias, only if every check passed
    export:   the same exports and checks, into a folder of the user's, without the registry

Everything runs on the CPU in fp32, whatever the sweep trained on: the adapter is merged into an
fp32 copy of the base for export, and the parity reference is that base with the adapter unmerged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial

from lorasweep.objectives import TrialModel, eval_inputs, load_trial_model

from . import _registry, tracking
from ._export import export_fp32, quantize
from ._parity import Limits, Measured, Parity, TorchLM, measure
from ._progress import format_params, format_value
from ._select import PRECISIONS, pick
from .errors import UserError
from .record import REGISTERED_TAG, TrialRecord, study_tracking_uri, version_tags
from .sweep import Sweep, stored_sweep

Log = Callable[[str], None]


@dataclass(frozen=True)
class Promotion:
    name: str  # the registered model
    trial: FrozenTrial
    parity: Parity | None  # None: the trial already was the champion, nothing was redone
    version: str
    previous: str | None  # the champion's version before, if any
    folder: Path | None  # the local copy of the exports


def promote(
    study: optuna.Study,
    trial_number: int | None = None,
    tracking_uri: str | None = None,
    out: Path | None = None,
    log: Log = print,
) -> Promotion:
    """Register the chosen trial as a new version and make it the champion if its exports pass the
    gate. A failed gate still registers the version (tagged lorasweep.gate=failed, with the reasons),
    so the evidence is kept; the alias stays where it was."""
    sweep = stored_sweep(study)
    name = sweep.promote.model_name or study.study_name
    trial = pick(study, sweep.promote.select, trial_number)
    run_id = _run_of(trial)
    client = tracking.client(study_tracking_uri(study, tracking_uri))
    current = _registry.champion(client, name)
    if current is not None and current.run_id == run_id:
        log(
            f"trial {trial.number} already is the champion: models:/{name}@champion (version {current.version})"
        )
        return Promotion(name, trial, None, current.version, current.version, None)

    _check_new(out)
    destination = out or Path("exports") / name / "next"
    with tempfile.TemporaryDirectory(prefix="lorasweep-promote-") as scratch, _building(destination) as build:
        parity, files = _export_and_measure(sweep, client, trial, run_id, build, Path(scratch), log)
        log(f"registering trial {trial.number} as a new version of {name!r}")
        version = _registry.register(
            client,
            name,
            run_id,
            files,
            build,
            tags=version_tags(study, trial, parity),
            params={k: str(v) for k, v in trial.params.items()},
            description=_description(study, trial, parity),
            max_new_tokens=sweep.eval.max_new_tokens,
        )
        # exports/NAME/vK is this registry's version K: a folder left by an older registry of the
        # same name (the store was reset since) is replaced.
        folder = out or Path("exports") / name / f"v{version.version}"
        _replace(folder, build)
    client.set_tag(run_id, REGISTERED_TAG, f"{name}/{version.version}")
    if parity.passed:
        client.set_registered_model_alias(name, _registry.CHAMPION, version.version)
    return Promotion(name, trial, parity, version.version, current.version if current else None, folder)


def export(
    study: optuna.Study,
    out: Path,
    trial_number: int | None = None,
    precisions: tuple[str, ...] = ("fp32",),
    tracking_uri: str | None = None,
    log: Log = print,
) -> tuple[FrozenTrial, Parity]:
    """The chosen trial's exports and their parity report, written to `out`."""
    _check_new(out)
    sweep = stored_sweep(study)
    precisions = tuple(p for p in PRECISIONS if p == "fp32" or p in precisions)  # fp32: the reference
    sweep = dataclasses.replace(sweep, promote=dataclasses.replace(sweep.promote, precisions=precisions))
    trial = pick(study, sweep.promote.select, trial_number)
    client = tracking.client(study_tracking_uri(study, tracking_uri))
    with tempfile.TemporaryDirectory(prefix="lorasweep-export-") as scratch, _building(out) as build:
        parity, _ = _export_and_measure(sweep, client, trial, _run_of(trial), build, Path(scratch), log)
        _replace(out, build)
    return trial, parity


def _check_new(out: Path | None) -> None:
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            f"--out must be a new or empty folder, but got out={str(out)!r}, which holds files. "
            "Name another folder, or empty it."
        )


@contextlib.contextmanager
def _building(destination: Path) -> Iterator[Path]:
    """A scratch folder beside `destination`, removed unless the caller moved it there: an export
    stopped half-way leaves nothing behind."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{destination.name}-build-", dir=destination.parent))
    try:
        yield build
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _replace(destination: Path, build: Path) -> None:
    if destination.exists():
        shutil.rmtree(destination)
    build.rename(destination)
    destination.chmod(0o755)  # mkdtemp made it private


def _run_of(trial: FrozenTrial) -> str:
    run_id = TrialRecord.of(trial).run_id
    if not run_id:
        raise UserError(f"a trial to hand over must have an MLflow run, but trial {trial.number} has none.")
    return run_id


def _export_and_measure(
    sweep: Sweep, client: MlflowClient, trial: FrozenTrial, run_id: str, out: Path, scratch: Path, log: Log
) -> tuple[Parity, dict[str, Path]]:
    """Exports under out/ (fp32/, int8/, ...) with out/parity.json; returns the parity report and the
    PyTorch model's files (base/ and adapter/ under scratch) for the registry."""
    log(f"trial {trial.number}: {format_params(trial.params)}  (mlflow run {run_id})")
    handed = load_trial_model(sweep.model, _adapter(client, trial, run_id, scratch), scratch)
    model, tokenizer = handed.model, handed.tokenizer
    prompts, rows = eval_inputs(
        sweep.data, sweep.eval, tokenizer
    )  # before the exports: moved data fails fast

    exports = [export_fp32(model, tokenizer, out / "fp32", log)]
    for precision in sweep.promote.precisions[1:]:
        exports.append(quantize(exports[0], precision, out))
    for e in exports:
        log(f"export: {e.precision} by {e.how} ({e.seconds:.1f} s, {_mb(e.size_bytes)})")

    log(f"parity: {len(prompts)} eval prompts, {len(rows)} eval rows")
    parity = measure(
        TorchLM(model, tokenizer),
        _reference(handed),
        exports,
        prompts,
        rows,
        sweep.eval.max_new_tokens,
        sweep.eval.batch_size,
        Limits(sweep.promote.max_logit_diff, sweep.promote.max_perplexity_change),
    )
    parity.save(out / "parity.json")
    log(format_parity(parity))
    return parity, handed.files


def _adapter(client: MlflowClient, trial: FrozenTrial, run_id: str, scratch: Path) -> Path:
    """The trial's adapter, downloaded from its MLflow run."""
    try:
        adapter = Path(client.download_artifacts(run_id, "adapter", str(scratch)))
    except MlflowException:
        adapter = scratch / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(
            f"a trial to hand over must have its adapter logged, but run {run_id} of trial "
            f"{trial.number} holds none under adapter/ (in {client.tracking_uri})."
        )
    return adapter


def _reference(handed: TrialModel) -> Measured:
    return Measured("pytorch", "transformers + peft", handed.size_bytes, handed.load_seconds)


# The gated columns and the check (_parity._gate) behind each: a figure decides the champion only
# where its model carries that check (int8's logits and tokens, for one, are measured, not gated).
_GATED = (
    ("change", "eval perplexity"),
    ("max |dlogit|", "largest logit difference"),
    ("greedy same", "greedy generation"),
)


def format_parity(parity: Parity) -> str:
    """The gate's findings as a table: the reported columns, then the gated ones; a gated column's
    figure in parentheses is measured on that model but not gated."""
    reported = f"{'':<9}{'by':<36}{'size':>9}{'load s':>8}{'ms/token':>10}{'speed':>7}{'perplexity':>12}"
    gated = f"{'change':>9}{'max |dlogit|':>14}{'greedy same':>14}"
    lines = [
        f"{'reported':<{len(reported)}} | gated",
        f"{reported} |{gated}",
    ]
    for m in parity.models:
        lines.append(
            f"{m.name:<9}{m.how:<36}{_mb(m.size_bytes):>9}{m.load_seconds:>8.2f}{m.ms_per_token:>10.2f}"
            f"{m.speedup:>6.1f}x{m.perplexity:>12.5g} |"
            + ("" if m.name == "pytorch" else _gated_cells(m, parity.prompts))
        )
    where = {
        column: [m.name for m in parity.models if check in {c.name for c in m.checks}]
        for column, check in _GATED
    }
    lines.append(
        "gated (decide the champion): "
        + ", ".join(f"{column} ({', '.join(names)})" for column, names in where.items() if names)
        + "; in ( ): measured, not gated"
    )
    lines.append(
        f"ms/token, speed: medians of {parity.speed_runs} runs over {parity.speed_prompts} eval prompts "
        "(greedy, batch 1); speed is PyTorch's ms/token over the model's in the same run"
    )
    verdict = (
        "parity gate: passed" if parity.passed else "parity gate: FAILED\n  " + "\n  ".join(parity.failures)
    )
    return "\n".join(lines + [verdict])


def _gated_cells(m: Measured, prompts: int) -> str:
    tokens = f"{m.identical}/{prompts}" + (f" +{m.ties} tie" if m.ties else "")
    cells = (f"{m.perplexity_change:+.2%}", f"{m.max_logit_diff:.2g}", tokens)
    checked = {c.name for c in m.checks}
    shown = [cell if check in checked else f"({cell})" for cell, (_, check) in zip(cells, _GATED)]
    return f"{shown[0]:>9}{shown[1]:>14}{shown[2]:>14}"


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def _description(study: optuna.Study, trial: FrozenTrial, parity: Parity) -> str:
    metrics = TrialRecord.of(trial).metrics
    scores = " ".join(f"{k}={format_value(v)}" for k, v in metrics.items())
    gate = "passed" if parity.passed else "FAILED: " + "; ".join(parity.failures)
    return (
        f"Trial {trial.number} of study {study.study_name}: {format_params(trial.params)}. {scores}. "
        f"ONNX exports ({', '.join(m.name for m in parity.models[1:])}) under onnx/; parity gate {gate}."
    )
