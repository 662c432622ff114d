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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from lorasweep.objectives.data import load_rows, tokenize
from lorasweep.objectives.model import Placement, load_base

from . import _registry
from ._export import export_fp32, quantize
from ._parity import Limits, Measured, Report, TorchLM, measure
from ._progress import format_params, format_value
from ._select import PRECISIONS, pick
from .errors import UserError
from .study import stored_sweep, study_tracking_uri
from .sweep import Sweep

Log = Callable[[str], None]


@dataclass(frozen=True)
class Promotion:
    name: str  # the registered model
    trial: FrozenTrial
    report: Report | None  # None: the trial already was the champion, nothing was redone
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
    client = MlflowClient(study_tracking_uri(study, tracking_uri))
    current = _registry.champion(client, name)
    if current is not None and current.run_id == run_id:
        log(
            f"trial {trial.number} already is the champion: models:/{name}@champion (version {current.version})"
        )
        return Promotion(name, trial, None, current.version, current.version, None)

    _check_new(out)
    destination = out or Path("exports") / name / "next"
    with tempfile.TemporaryDirectory(prefix="lorasweep-promote-") as scratch, _building(destination) as build:
        report, files = _export_and_measure(sweep, client, trial, run_id, build, Path(scratch), log)
        log(f"registering trial {trial.number} as a new version of {name!r}")
        version = _registry.register(
            client,
            name,
            run_id,
            files,
            build,
            tags=_version_tags(study, trial, report),
            params={k: str(v) for k, v in trial.params.items()},
            description=_description(study, trial, report),
            max_new_tokens=sweep.eval.max_new_tokens,
        )
        # exports/NAME/vK is this registry's version K: a folder left by an older registry of the
        # same name (the store was reset since) is replaced.
        folder = out or Path("exports") / name / f"v{version.version}"
        _replace(folder, build)
    client.set_tag(run_id, "lorasweep.registered_as", f"{name}/{version.version}")
    if report.passed:
        client.set_registered_model_alias(name, _registry.CHAMPION, version.version)
    return Promotion(name, trial, report, version.version, current.version if current else None, folder)


def export(
    study: optuna.Study,
    out: Path,
    trial_number: int | None = None,
    precisions: tuple[str, ...] = ("fp32",),
    tracking_uri: str | None = None,
    log: Log = print,
) -> tuple[FrozenTrial, Report]:
    """The chosen trial's exports and their parity report, written to `out`."""
    _check_new(out)
    sweep = stored_sweep(study)
    precisions = tuple(p for p in PRECISIONS if p == "fp32" or p in precisions)  # fp32: the reference
    sweep = dataclasses.replace(sweep, promote=dataclasses.replace(sweep.promote, precisions=precisions))
    trial = pick(study, sweep.promote.select, trial_number)
    client = MlflowClient(study_tracking_uri(study, tracking_uri))
    with tempfile.TemporaryDirectory(prefix="lorasweep-export-") as scratch, _building(out) as build:
        report, _ = _export_and_measure(sweep, client, trial, _run_of(trial), build, Path(scratch), log)
        _replace(out, build)
    return trial, report


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
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id:
        raise UserError(f"a trial to hand over must have an MLflow run, but trial {trial.number} has none.")
    return run_id


def _export_and_measure(
    sweep: Sweep, client: MlflowClient, trial: FrozenTrial, run_id: str, out: Path, scratch: Path, log: Log
) -> tuple[Report, dict[str, Path]]:
    """Exports under out/ (fp32/, int8/, ...) with out/parity.json; returns the report and the
    PyTorch model's files (base/ and adapter/ under scratch) for the registry."""
    log(f"trial {trial.number}: {format_params(trial.params)}  (mlflow run {run_id})")
    model, tokenizer, files, reference = _trial_model(sweep, client, trial, run_id, scratch)
    prompts, rows = _eval_inputs(sweep, tokenizer)  # before the exports: moved data fails fast

    exports = [export_fp32(model, tokenizer, out / "fp32", log)]
    for precision in sweep.promote.precisions[1:]:
        exports.append(quantize(exports[0], precision, out))
    for e in exports:
        log(f"export: {e.precision} by {e.how} ({e.seconds:.1f} s, {_mb(e.size_bytes)})")

    log(f"parity: {len(prompts)} eval prompts, {len(rows)} eval rows")
    report = measure(
        TorchLM(model, tokenizer),
        reference,
        exports,
        prompts,
        rows,
        sweep.eval.max_new_tokens,
        sweep.eval.batch_size,
        Limits(sweep.promote.max_logit_diff, sweep.promote.max_perplexity_change),
    )
    report.save(out / "parity.json")
    log(format_report(report))
    return report, files


def _trial_model(
    sweep: Sweep, client: MlflowClient, trial: FrozenTrial, run_id: str, scratch: Path
) -> tuple[PeftModel, PreTrainedTokenizerBase, dict[str, Path], Measured]:
    """The trial's base + adapter in fp32 on the CPU, the files they load from, and the reference's
    size and load time."""
    try:
        adapter = Path(client.download_artifacts(run_id, "adapter", str(scratch)))
    except MlflowException:
        adapter = scratch / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(
            f"a trial to hand over must have its adapter logged, but run {run_id} of trial "
            f"{trial.number} holds none under adapter/ (in {client.tracking_uri})."
        )
    # The base as the sweep loaded it (tiny, a hub id or a folder), then saved: the registered
    # model carries its own copy, and PyTorch's load time is measured from disk like ONNX's.
    base, tokenizer = load_base(dataclasses.replace(sweep.model, method="lora"), Placement("cpu", "fp32"))
    base.config.use_cache = True  # load_base turns the cache off for training; generation wants it
    base.save_pretrained(scratch / "base")
    tokenizer.save_pretrained(scratch / "base")  # with the pad token load_base gave it
    del base
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(scratch / "base")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(scratch / "base"), adapter).eval()
    loaded = time.monotonic() - started
    files = {"base": scratch / "base", "adapter": adapter}
    size = sum(f.stat().st_size for folder in files.values() for f in folder.rglob("*") if f.is_file())
    return model, tokenizer, files, Measured("pytorch", "transformers + peft", size, loaded)


def _eval_inputs(sweep: Sweep, tokenizer) -> tuple[list[list[int]], list[dict]]:
    """The eval rows (token ids and labels, as the sweep scored them) and the prompts to generate
    from: the eval prompts, or, for text_template data, the first half of each eval text."""
    train, eval_rows = load_rows(sweep.data)
    data = tokenize(sweep.data, train.select([]), eval_rows, tokenizer)  # only eval is needed
    rows = data.eval.to_list()
    n = sweep.eval.max_samples
    if data.eval_prompts:
        prompts = [tokenizer(p)["input_ids"] for p in data.eval_prompts[:n]]
    else:
        prompts = [r["input_ids"][: max(1, min(32, len(r["input_ids"]) // 2))] for r in rows[:n]]
    return prompts, rows


def format_report(report: Report) -> str:
    torch_ms = report.models[0].ms_per_token
    header = f"{'':<9}{'by':<36}{'size':>9}{'load s':>8}{'ms/token':>10}{'speed':>7}{'perplexity':>12}"
    lines = [header + f"{'change':>9}{'max |dlogit|':>14}{'greedy same':>13}"]
    for m in report.models:
        tokens = (
            "-"
            if m.name == "pytorch"
            else f"{m.identical}/{report.prompts}" + (f" +{m.ties} tie" if m.ties else "")
        )
        lines.append(
            f"{m.name:<9}{m.how:<36}{_mb(m.size_bytes):>9}{m.load_seconds:>8.2f}{m.ms_per_token:>10.2f}"
            f"{torch_ms / max(m.ms_per_token, 1e-9):>6.1f}x{m.perplexity:>12.5g}"
            f"{'' if m.name == 'pytorch' else f'{m.perplexity_change:+.2%}':>9}"
            f"{'' if m.name == 'pytorch' else f'{m.max_logit_diff:.2g}':>14}{tokens:>13}"
        )
    verdict = (
        "parity gate: passed" if report.passed else "parity gate: FAILED\n  " + "\n  ".join(report.failures)
    )
    return "\n".join(lines + [verdict])


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def _version_tags(study: optuna.Study, trial: FrozenTrial, report: Report) -> dict[str, str]:
    tags = {
        "lorasweep.study": study.study_name,
        "lorasweep.trial_number": str(trial.number),
        _registry.GATE_TAG: "passed" if report.passed else "failed",
    }
    if not report.passed:
        tags["lorasweep.gate_failures"] = "; ".join(report.failures)[:5000]
    tags.update({f"param.{k}": str(v) for k, v in trial.params.items()})
    tags.update({f"metric.{k}": f"{v:.6g}" for k, v in trial.user_attrs.get("metrics", {}).items()})
    for m in report.models:
        tags.update(
            {
                f"{m.name}.size_mb": f"{m.size_bytes / 2**20:.2f}",
                f"{m.name}.load_seconds": f"{m.load_seconds:.3f}",
                f"{m.name}.ms_per_token": f"{m.ms_per_token:.3f}",
                f"{m.name}.eval_perplexity": f"{m.perplexity:.6g}",
            }
        )
        if m.name != "pytorch":
            tags[f"{m.name}.exporter"] = m.how
            tags[f"{m.name}.perplexity_change"] = f"{m.perplexity_change:+.4%}"
            tags[f"{m.name}.max_logit_diff"] = f"{m.max_logit_diff:.3g}"
            tags[f"{m.name}.greedy_identical"] = f"{m.identical}/{report.prompts}"
    return tags


def _description(study: optuna.Study, trial: FrozenTrial, report: Report) -> str:
    metrics = trial.user_attrs.get("metrics", {})
    scores = " ".join(f"{k}={format_value(v)}" for k, v in metrics.items())
    gate = "passed" if report.passed else "FAILED: " + "; ".join(report.failures)
    return (
        f"Trial {trial.number} of study {study.study_name}: {format_params(trial.params)}. {scores}. "
        f"ONNX exports ({', '.join(m.name for m in report.models[1:])}) under onnx/; parity gate {gate}."
    )
