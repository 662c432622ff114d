"""Handing over a trial: from a finished sweep to `models:/NAME@champion` and an ONNX folder.

    promote:  pick the trial -> load base + adapter -> export ONNX (fp32, then Olive's int8/int4)
              -> parity and speed against PyTorch -> register a version (pyfunc + ONNX + evidence)
              -> move the `champion` alias, only if every check passed
    export:   the same exports and checks, into a folder of the user's, without the registry

Several trials (--top K, --trial repeated) are handed over as an adapter bundle instead: one fp32
ONNX base with LoRA inputs and an .onnx_adapter per trial (_bundle), each adapter gated through the
bundle (_bundle_parity), registered as one version whose pyfunc takes an `adapter` param.

Everything runs on the CPU in fp32, whatever the sweep trained on: the adapter is merged into an
fp32 copy of the base for export, and the parity reference is that base with the adapter unmerged.

Only what was trained is handed over: the adapter's files and the base must be the ones the
trial's run recorded (_provenance), checked before anything is exported, and the rebuilt PyTorch
model must give the trial's own eval loss (a gate check). Only what the study owns is moved
(_ownership): a champion promoted from another study stays unless --force, an exports folder that
exists is never replaced by another version's exports, and promotes to one registered model take
turns; one that waited and finds the same hand-over registered meanwhile says so and registers
nothing.

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
import json
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import optuna
from mlflow import MlflowClient
from mlflow.entities import LoggedModel
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial

from lorasweep.objectives import InputError, ModelSpec, TrialModel, eval_inputs, load_trial_model

from .. import tracking
from ..errors import UserError
from ..precisions import PRECISIONS
from ..progress import format_params
from ..provenance import check_adapter, check_base
from ..record import (
    BUNDLE_TAG,
    GATE_TAG,
    REGISTERED_TAG,
    Provenance,
    TrialRecord,
    study_tracking_uri,
)
from ..recovery import died_here, worker_id
from ..selection import pick, require_gain
from ..selection import top as top_trials
from ..sweepfile import Sweep, stored_sweep
from . import _registry
from ._bundle import adapter_name, build_bundle, check_adapters
from ._bundle_parity import BundleParity, measure_bundle
from ._export import export_fp32, quantize
from ._ownership import check_owned, replace, turn, version_folder
from ._parity import Limits, Measured, Parity, TorchLM, measure
from ._parity_table import format_bundle, format_parity, mb
from ._tags import bundle_version_tags, version_description, version_tags

Log = Callable[[str], None]

# The rebuilt model is the adapter on an fp32 base; a QLoRA trial scored it on the NF4-quantized
# base it trained on, whose loss differs by more than the gate's 1% with nothing here to say by how
# much: no honest reference, so no check. The adapter's hashes still hold it to what was trained.
QLORA_UNCHECKED = "not checked: the trial trained on a 4-bit base, the rebuild is fp32"


@dataclass(frozen=True)
class Promotion:
    name: str  # the registered model
    trial: FrozenTrial  # a bundle's best trial
    parity: Parity | BundleParity | None  # None: it already was the champion, nothing was redone
    version: str
    previous: str | None  # the champion's version before, if any
    folder: Path | None  # the local copy of the exports
    bundle: tuple[int, ...] = ()  # an adapter bundle's trials, best first


@dataclass(frozen=True)
class _Handover:
    """What a promote or an export hands over: one trial, or several as an adapter bundle."""

    trials: list[FrozenTrial]
    bundle: bool

    @property
    def lead(self) -> FrozenTrial:
        return self.trials[0]

    @property
    def label(self) -> str:
        numbers = ", ".join(str(t.number) for t in self.trials)
        return f"trials {numbers} (an adapter bundle)" if self.bundle else f"trial {numbers}"

    @property
    def numbers(self) -> tuple[int, ...]:
        return tuple(t.number for t in self.trials) if self.bundle else ()


def promote(
    study: optuna.Study,
    trial_number: int | Sequence[int] | None = None,
    tracking_uri: str | None = None,
    out: Path | None = None,
    log: Log = print,
    top: int | None = None,
    force: bool = False,
    allow_no_gain: bool = False,
) -> Promotion:
    """Register the chosen trial as a new version and make it the champion if its exports pass the
    gate. Several trials (a list, or the `top` k) are registered as one version: an adapter bundle.
    A failed gate still registers the version (tagged lorasweep.gate=failed, with the reasons), so
    the evidence is kept; the alias stays where it was. A promote of this trial that was killed
    after it logged its model is completed (version, exports, run tag, alias), not repeated. A
    champion promoted from another study is moved only with `force`. A trial (a bundle's best) that
    does not beat the base model on the objective is refused unless `allow_no_gain` or `force`
    (selection.require_gain): `force` promotes past every refusal, `allow_no_gain` past this one."""
    sweep = stored_sweep(study)
    name = sweep.promote.model_name or study.study_name
    handover = _handed_over(study, sweep, trial_number, top)
    if not (allow_no_gain or force):
        require_gain(study, handover.lead)  # before anything is loaded, exported or registered
    trial, run_id = handover.lead, _run_of(handover.lead)
    uri = study_tracking_uri(study, tracking_uri)
    client = tracking.client(uri)
    with _interruptible():
        started = int(time.time() * 1000)  # the store's clock for a local store; a server's may drift
        earlier = {v.version for v in _versions_of(client, name, run_id, handover)}
        with turn(uri, name, log) as holder_since:
            # Registered meanwhile: after the snapshot above, or by the promote this one waited for
            # (which may have registered before this one started, and not yet let go of the lock).
            since = min(started, holder_since or started)
            current = _registry.champion(client, name)
            resumed = _registry.unfinished(client, name, run_id, log)
            if resumed is not None and resumed.tags.get(BUNDLE_TAG) != _bundle_tag(handover):
                resumed = None  # another hand-over from the same run: not this one's to complete
            meanwhile = sorted(
                (
                    v.version
                    for v in _versions_of(client, name, run_id, handover)
                    if v.version not in earlier or (v.creation_timestamp or 0) >= since
                ),
                key=int,
            )
            if resumed is None and meanwhile:
                return _registered_meanwhile(client, name, handover, meanwhile[-1], current, log)
            if (
                resumed is None
                and current is not None
                and current.run_id == run_id
                and current.tags.get(BUNDLE_TAG) == _bundle_tag(handover)
            ):
                log(
                    f"{handover.label} already is the champion: models:/{name}@champion "
                    f"(version {current.version})"
                )
                return Promotion(name, trial, None, current.version, current.version, None, handover.numbers)
            # A resumed promotion whose own version is the champion already moved it; any other
            # champion is moved only if it is this study's.
            if current is not None and not force and not _holds(current, resumed):
                check_owned(study, name, current)

            _check_new(out)
            destination = out or Path("exports") / name / "next"
            with (
                _scratch(Path(tempfile.gettempdir()), "lorasweep-promote-") as scratch,
                _building(destination) as build,
            ):
                provenance = _recorded(client, handover)
                if resumed is not None:
                    resumed = _resumable(client, resumed, handover, provenance, build, scratch, log)
                if resumed is not None:
                    parity = (BundleParity if handover.bundle else Parity).load(build / "parity.json")
                    log(_table(parity))
                    logged = resumed
                    described = version_description(study.study_name, handover.trials, parity)
                    version = _registry.version_of(client, name, logged, described)
                else:
                    parity, files = _measured(sweep, client, handover, provenance, build, scratch, log)
                    log(f"registering {handover.label} as a new version of {name!r}")
                    logged, version = _registry.register(
                        client,
                        name,
                        run_id,
                        files,
                        build,
                        tags=_tags(study, handover, parity, provenance),
                        params=_params(handover),
                        description=version_description(study.study_name, handover.trials, parity),
                        max_new_tokens=sweep.eval.max_new_tokens,
                        scratch=scratch,
                        promoter=worker_id(),
                        adapters=tuple(adapter_name(n) for n in handover.numbers),
                    )
                folder = out or version_folder(name, version.version, build, log)
                replace(folder, build, ours=resumed is not None and out is None)
            client.set_tag(run_id, REGISTERED_TAG, f"{name}/{version.version}")
            if parity.passed:
                client.set_registered_model_alias(name, _registry.CHAMPION, version.version)
            _registry.finish(client, logged)  # last: until here, a rerun completes this promotion
    previous = current.version if current is not None and current.version != version.version else None
    return Promotion(name, trial, parity, version.version, previous, folder, handover.numbers)


@overload
def export(
    study: optuna.Study,
    out: Path,
    trial_number: int | None = None,
    precisions: tuple[str, ...] = ("fp32",),
    tracking_uri: str | None = None,
    log: Log = print,
    top: None = None,
    adapters: Literal[False] = False,
) -> tuple[list[FrozenTrial], Parity]: ...


@overload
def export(
    study: optuna.Study,
    out: Path,
    trial_number: int | Sequence[int] | None = None,
    precisions: tuple[str, ...] = ("fp32",),
    tracking_uri: str | None = None,
    log: Log = print,
    top: int | None = None,
    adapters: bool = False,
) -> tuple[list[FrozenTrial], Parity | BundleParity]: ...


def export(
    study: optuna.Study,
    out: Path,
    trial_number: int | Sequence[int] | None = None,
    precisions: tuple[str, ...] = ("fp32",),
    tracking_uri: str | None = None,
    log: Log = print,
    top: int | None = None,
    adapters: bool = False,
) -> tuple[list[FrozenTrial], Parity | BundleParity]:
    """The chosen trial's exports and their parity report, written to `out`. Several trials (or
    `adapters`) make an adapter bundle: one fp32 base and an .onnx_adapter per trial, and a
    BundleParity; one trial, a Parity."""
    _check_new(out)
    sweep = stored_sweep(study)
    handover = _handed_over(study, sweep, trial_number, top, adapters)
    if handover.bundle and set(precisions) - {"fp32"}:
        raise UserError(
            f"an adapter bundle must be fp32, but got precision={','.join(precisions)}: lorasweep does not "
            "quantize a base with LoRA inputs. Drop --precision, or export the trials one by one."
        )
    precisions = tuple(p for p in PRECISIONS if p == "fp32" or p in precisions)  # fp32: the reference
    sweep = dataclasses.replace(sweep, promote=sweep.promote.model_copy(update={"precisions": precisions}))
    client = tracking.client(study_tracking_uri(study, tracking_uri))
    with (
        _interruptible(),
        _scratch(Path(tempfile.gettempdir()), "lorasweep-export-") as scratch,
        _building(out) as build,
    ):
        parity, _ = _measured(sweep, client, handover, _recorded(client, handover), build, scratch, log)
        replace(out, build)
    return handover.trials, parity


def _handed_over(
    study: optuna.Study,
    sweep: Sweep,
    trial_number: int | Sequence[int] | None,
    top: int | None,
    adapters: bool = False,
) -> _Handover:
    numbers = [trial_number] if isinstance(trial_number, int) else list(trial_number or [])
    if top is not None and numbers:
        raise UserError(f"--top and --trial must not both be given, but got top={top} and trial={numbers}.")
    if top is not None:
        return _Handover(top_trials(study, sweep.promote.select, top), bundle=True)
    if len(numbers) <= 1:
        return _Handover([pick(study, sweep.promote.select, numbers[0] if numbers else None)], adapters)
    trials: list[FrozenTrial] = []
    for number in numbers:  # a duplicate stands for the trial it copied: counted once
        trial = pick(study, sweep.promote.select, number)
        if all(t.number != trial.number for t in trials):
            trials.append(trial)
    return _Handover(trials, bundle=True)


def _versions_of(client: MlflowClient, name: str, run_id: str, handover: _Handover) -> list[ModelVersion]:
    """The versions of `name` that hold this hand-over (its run, and the same bundle or none)."""
    try:
        found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:  # no such model yet
        return []
    return [v for v in found if v.tags.get(BUNDLE_TAG) == _bundle_tag(handover)]


def _holds(version: ModelVersion, logged: LoggedModel | None) -> bool:
    """`version` was registered from `logged` (the SQL registry keeps no model_id: the source tells)."""
    return logged is not None and (
        version.model_id == logged.model_id or version.source == logged.artifact_location
    )


def _resumable(
    client: MlflowClient,
    logged: LoggedModel,
    handover: _Handover,
    provenance: list[Provenance],
    build: Path,
    scratch: Path,
    log: Log,
) -> LoggedModel | None:
    """`logged`, a promotion of `handover` that a killed promote left, with its exports under
    `build`, if it may be completed: its copies of the adapters (what the registry would serve) are
    still the files the trials' runs recorded, which check_adapter refuses otherwise. One made
    before lorasweep recorded those hashes and the gate's eval-loss check is marked FAILED, and
    None says to promote from scratch."""
    names = tuple(adapter_name(n) for n in handover.numbers) or ("adapter",)
    prefixes = [f"{n}." for n in names] if handover.bundle else [""]
    _registry.download_exports(client, logged, build, scratch)
    report = json.loads((build / "parity.json").read_text()) if (build / "parity.json").is_file() else {}
    if "max_eval_loss_change" not in report or any(
        not Provenance.of_run(logged.tags, prefix).adapter_sha256 for prefix in prefixes
    ):
        log(
            f"note: logged model {logged.model_id}, a promotion of {handover.label} that an earlier "
            "promote left half-done, was made before lorasweep recorded adapter hashes and checked "
            "eval loss: marked FAILED, and promoted again from the start"
        )
        _registry.fail(client, logged)
        for item in build.iterdir():
            shutil.rmtree(item) if item.is_dir() else item.unlink()
        return None
    log(
        f"completing the promotion of {handover.label} that an earlier promote left half-done "
        f"(logged model {logged.model_id})"
    )
    copies = _registry.download_adapters(client, logged, names, scratch)
    for trial, recorded, name in zip(handover.trials, provenance, names, strict=True):
        check_adapter(trial.number, recorded, copies[name], log)
    return logged


def _registered_meanwhile(
    client: MlflowClient, name: str, handover: _Handover, version: str, current: ModelVersion | None, log: Log
) -> Promotion:
    """Another promote registered this hand-over while this one waited its turn: say what it did."""
    gate = client.get_model_version(name, version).tags.get(GATE_TAG)  # passed | failed
    if current is not None and current.version == version:
        log(
            f"{handover.label} was promoted by another promote while this one waited: "
            f"models:/{name}@champion is version {version}"
        )
    else:
        stays = f"stays on version {current.version}" if current is not None else "is not set"
        log(
            f"{handover.label} was registered by another promote while this one waited: version {version} "
            f"of {name!r}, whose parity gate {gate or 'is not recorded'}; the champion {stays}"
        )
    previous = current.version if current is not None else None
    return Promotion(name, handover.lead, None, version, previous, None, handover.numbers)


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
    name says nothing of its owner, is left alone. Folders made here for `parent` go too if the block
    leaves them empty (a refused export leaves no empty exports/NAME behind)."""
    made = [p for p in (parent, *parent.parents) if not p.exists()]
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
        for empty in made:  # innermost first; one that now holds anything stays
            with contextlib.suppress(OSError):
                empty.rmdir()


def _building(destination: Path) -> contextlib.AbstractContextManager[Path]:
    """A scratch folder beside `destination`, removed unless the caller moved it there: an export
    stopped half-way leaves nothing behind."""
    return _scratch(destination.parent, f".{destination.name}-build-")


def _run_of(trial: FrozenTrial) -> str:
    run_id = TrialRecord.of(trial).run_id
    if not run_id:
        raise UserError(f"a trial to hand over must have an MLflow run, but trial {trial.number} has none.")
    return run_id


def _recorded(client: MlflowClient, handover: _Handover) -> list[Provenance]:
    """What each trial's run recorded of what it trained, in the hand-over's order."""
    return [Provenance.of_run(client.get_run(_run_of(t)).data.tags) for t in handover.trials]


def _limits(sweep: Sweep) -> Limits:
    p = sweep.promote
    return Limits(p.max_logit_diff, p.max_perplexity_change, p.max_eval_loss_change)


def _measured(
    sweep: Sweep,
    client: MlflowClient,
    handover: _Handover,
    provenance: list[Provenance],
    out: Path,
    scratch: Path,
    log: Log,
) -> tuple[Parity | BundleParity, dict[str, Path]]:
    if handover.bundle:
        return _bundle_and_measure(sweep, client, handover.trials, provenance, out, scratch, log)
    lead = handover.lead
    return _export_and_measure(sweep, client, lead, _run_of(lead), provenance[0], out, scratch, log)


def _export_and_measure(
    sweep: Sweep,
    client: MlflowClient,
    trial: FrozenTrial,
    run_id: str,
    provenance: Provenance,
    out: Path,
    scratch: Path,
    log: Log,
) -> tuple[Parity, dict[str, Path]]:
    """Exports under out/ (fp32/, int8/, ...) with out/parity.json; returns the parity report and the
    PyTorch model's files (base/ and adapter/ under scratch) for the registry."""
    log(f"trial {trial.number}: {format_params(trial.params)}  (mlflow run {run_id})")
    adapter = _adapter(client, trial, run_id, scratch)
    check_adapter(trial.number, provenance, adapter, log)  # before anything is loaded or exported
    handed = _load(sweep.model, adapter, scratch, [provenance])
    check_base([trial.number], [provenance], handed.base_identity, log)
    model, tokenizer = handed.model, handed.tokenizer
    # before the exports: data that moved fails fast
    prompts, rows = eval_inputs(sweep.data, sweep.eval, tokenizer)

    exports = [export_fp32(model, tokenizer, out / "fp32", scratch, log)]
    for precision in sweep.promote.precisions[1:]:
        exports.append(quantize(exports[0], precision, out, scratch))
    for e in exports:
        log(f"export: {e.precision} by {e.how} ({e.seconds:.1f} s, {mb(e.size_bytes)})")

    log(f"parity: {len(prompts)} eval prompts, {len(rows)} eval rows")
    parity = measure(
        TorchLM(model, tokenizer),
        _reference(handed),
        exports,
        prompts,
        rows,
        sweep.eval.max_new_tokens,
        sweep.eval.batch_size,
        _limits(sweep),
        TrialRecord.of(trial).metrics.get("eval_loss"),
        QLORA_UNCHECKED if sweep.model.method == "qlora" else None,
    )
    parity.save(out / "parity.json")
    log(format_parity(parity))
    return parity, handed.files


def _bundle_and_measure(
    sweep: Sweep,
    client: MlflowClient,
    trials: list[FrozenTrial],
    provenance: list[Provenance],
    out: Path,
    scratch: Path,
    log: Log,
) -> tuple[BundleParity, dict[str, Path]]:
    """An adapter bundle of `trials` under out/ with out/parity.json; returns the parity report and
    the PyTorch model's files (base/ and each trial's adapter) for the registry."""
    adapters = {}
    for trial, recorded in zip(trials, provenance, strict=True):
        log(f"trial {trial.number}: {format_params(trial.params)}  (mlflow run {_run_of(trial)})")
        name = adapter_name(trial.number)
        adapters[name] = _adapter(client, trial, _run_of(trial), scratch / name)
        check_adapter(trial.number, recorded, adapters[name], log)
    check_adapters(adapters)
    handed = _load(sweep.model, adapters, scratch, provenance)
    check_base([t.number for t in trials], provenance, handed.base_identity, log)
    model, tokenizer = handed.model, handed.tokenizer
    # before the exports: data that moved fails fast
    prompts, rows = eval_inputs(sweep.data, sweep.eval, tokenizer)

    bundle = build_bundle(handed.files["base"], adapters, out, scratch)
    log(
        f"export: the bundle by Model Builder + Olive ExtractAdapters ({bundle.seconds:.1f} s, "
        f"{mb(bundle.size_bytes)})"
    )
    merged = {}
    for name in adapters:  # what the bundle replaces, to compare sizes and speeds with
        model.set_adapter(name)
        merged[name] = export_fp32(model, tokenizer, scratch / f"merged-{name}", scratch, log)
    log(f"parity: {len(adapters)} adapters, {len(prompts)} eval prompts, {len(rows)} eval rows")
    parity = measure_bundle(
        TorchLM(model, tokenizer),
        bundle,
        {adapter_name(t.number): t.number for t in trials},
        {
            name: json.loads((folder / "adapter_config.json").read_text())["r"]
            for name, folder in adapters.items()
        },
        merged,
        prompts,
        rows,
        sweep.eval.max_new_tokens,
        sweep.eval.batch_size,
        _limits(sweep),
        {
            adapter_name(t.number): TrialRecord.of(t).metrics["eval_loss"]
            for t in trials
            if "eval_loss" in TrialRecord.of(t).metrics and sweep.model.method != "qlora"
        },
    )
    if sweep.model.method == "qlora":
        log(f"PyTorch eval loss {QLORA_UNCHECKED}")
    parity.save(out / "parity.json")
    log(format_bundle(parity))
    return parity, handed.files


def _load(
    spec: ModelSpec, adapters: Path | dict[str, Path], scratch: Path, provenance: list[Provenance]
) -> TrialModel:
    """The trials' model, its hub base at the commit they recorded: a hub model whose main moved on
    since the sweep still hands over what was trained, and check_base then compares like with like."""
    commits = {
        p.base.removeprefix(f"hub {spec.base}@")
        for p in provenance
        if p.base is not None and p.base.startswith(f"hub {spec.base}@")
    }
    if len(commits) != 1 or spec.revision in commits:
        return load_trial_model(spec, adapters, scratch)  # tiny, a folder, or several commits: as named
    (commit,) = commits
    try:
        return load_trial_model(spec.model_copy(update={"revision": commit}), adapters, scratch)
    except InputError as e:
        raise UserError(
            f"the base model must load at the commit its trials trained on, but got "
            f"revision={commit!r} of {spec.base!r}, which did not load ({e}). Bring that commit into the "
            "hub cache (huggingface-cli download with --revision, online), or train again on the base "
            "as it is now."
        ) from e


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


def _table(parity: Parity | BundleParity) -> str:
    return format_bundle(parity) if isinstance(parity, BundleParity) else format_parity(parity)


def _bundle_tag(handover: _Handover) -> str | None:
    return ",".join(map(str, handover.numbers)) or None


def _tags(
    study: optuna.Study, handover: _Handover, parity: Parity | BundleParity, provenance: list[Provenance]
) -> dict[str, str]:
    """The version's tags, with what each trial's run recorded of what it trained."""
    if isinstance(parity, BundleParity):
        tags = bundle_version_tags(study, handover.trials, parity)
        for trial, recorded in zip(handover.trials, provenance, strict=True):
            tags.update(recorded.version_tags(f"{adapter_name(trial.number)}."))
        return tags
    return version_tags(study, handover.lead, parity) | provenance[0].version_tags()


def _params(handover: _Handover) -> dict[str, str]:
    if not handover.bundle:
        return {k: str(v) for k, v in handover.lead.params.items()}
    return {f"{adapter_name(t.number)}.{k}": str(v) for t in handover.trials for k, v in t.params.items()}
