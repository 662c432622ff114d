"""Handing over a trial: from a finished sweep to `models:/NAME@champion` and an ONNX folder.

    promote:  pick the trial -> load base + adapter -> export ONNX (fp32, then Olive's int8/int4)
              -> parity and speed against PyTorch -> register a version (pyfunc + ONNX + evidence)
              -> move the `champion` alias, only if every check passed
    export:   the same exports and checks, into a folder of the user's, without the registry

Everything runs on the CPU in fp32, whatever the sweep trained on: the adapter is merged into an
fp32 copy of the base for export, and the parity reference is that base with the adapter unmerged.

A promote may be killed anywhere. Its scratch folders (one in the system temp folder, one beside
the export) carry the process's name (host:pid:start) and are removed on every exit Python sees
(SIGTERM included); those of a process that died are removed by the next promote or export. A
promote killed after it logged its model is completed by the next promote of the same trial
(_registry.unfinished).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import shutil
import signal
import tempfile
import threading
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
from ._recovery import died_here, worker_id
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
    so the evidence is kept; the alias stays where it was. A promote of this trial that was killed
    after it logged its model is completed (version, exports, run tag, alias), not repeated."""
    sweep = stored_sweep(study)
    name = sweep.promote.model_name or study.study_name
    trial = pick(study, sweep.promote.select, trial_number)
    run_id = _run_of(trial)
    client = tracking.client(study_tracking_uri(study, tracking_uri))
    with _interruptible():
        current = _registry.champion(client, name)
        resumed = _registry.unfinished(client, name, run_id, log)
        if resumed is None and current is not None and current.run_id == run_id:
            log(
                f"trial {trial.number} already is the champion: models:/{name}@champion "
                f"(version {current.version})"
            )
            return Promotion(name, trial, None, current.version, current.version, None)

        _check_new(out)
        destination = out or Path("exports") / name / "next"
        with (
            _scratch(Path(tempfile.gettempdir()), "lorasweep-promote-") as scratch,
            _building(destination) as build,
        ):
            if resumed is not None:
                log(
                    f"completing the promotion of trial {trial.number} that an earlier promote left "
                    f"half-done (logged model {resumed.model_id})"
                )
                _registry.download_exports(client, resumed, build, scratch)
                parity = Parity.load(build / "parity.json")
                log(format_parity(parity))
                logged = resumed
                version = _registry.version_of(client, name, logged, _description(study, trial, parity))
            else:
                parity, files = _export_and_measure(sweep, client, trial, run_id, build, scratch, log)
                log(f"registering trial {trial.number} as a new version of {name!r}")
                logged, version = _registry.register(
                    client,
                    name,
                    run_id,
                    files,
                    build,
                    tags=version_tags(study, trial, parity),
                    params={k: str(v) for k, v in trial.params.items()},
                    description=_description(study, trial, parity),
                    max_new_tokens=sweep.eval.max_new_tokens,
                    scratch=scratch,
                    promoter=worker_id(),
                )
            # exports/NAME/vK is this registry's version K: a folder left by an older registry of the
            # same name (the store was reset since) is replaced.
            folder = out or Path("exports") / name / f"v{version.version}"
            _replace(folder, build)
        client.set_tag(run_id, REGISTERED_TAG, f"{name}/{version.version}")
        if parity.passed:
            client.set_registered_model_alias(name, _registry.CHAMPION, version.version)
        _registry.finish(client, logged)  # last: until here, a rerun completes this promotion
    previous = current.version if current is not None and current.version != version.version else None
    return Promotion(name, trial, parity, version.version, previous, folder)


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
    with (
        _interruptible(),
        _scratch(Path(tempfile.gettempdir()), "lorasweep-export-") as scratch,
        _building(out) as build,
    ):
        parity, _ = _export_and_measure(sweep, client, trial, _run_of(trial), build, scratch, log)
        _replace(out, build)
    return trial, parity


def _check_new(out: Path | None) -> None:
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            f"--out must be a new or empty folder, but got out={str(out)!r}, which holds files. "
            "Name another folder, or empty it."
        )


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt while promote works, as Ctrl-C does, so that its cleanups run
    (scratch folders, a PENDING LoggedModel finalized FAILED). The CLI does so already; this is for
    callers from Python that left SIGTERM's default, which ends the process on the spot."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield  # signals are the main thread's, and a handler someone installed is theirs
        return
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _scratch(parent: Path, stem: str) -> Iterator[Path]:
    """A folder under `parent` named stem + this process's worker id, removed however Python exits
    the block. Folders of the same stem that a process of this machine left when it was killed
    (kill -9, out of memory) are removed first; any other folder, another process's or one whose
    name says nothing of its owner, is left alone."""
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(glob.escape(stem) + "*"):
        # stem + host:pid:start + "-" + mkdtemp's suffix (letters, digits, _)
        if stale.is_dir() and died_here(stale.name[len(stem) :].rpartition("-")[0]):
            shutil.rmtree(stale, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{stem}{worker_id()}-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _building(destination: Path) -> contextlib.AbstractContextManager[Path]:
    """A scratch folder beside `destination`, removed unless the caller moved it there: an export
    stopped half-way leaves nothing behind."""
    return _scratch(destination.parent, f".{destination.name}-build-")


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

    exports = [export_fp32(model, tokenizer, out / "fp32", scratch, log)]
    for precision in sweep.promote.precisions[1:]:
        exports.append(quantize(exports[0], precision, out, scratch))
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
