"""The MLflow Model Registry side of promotion: one pyfunc version per promoted trial, and the alias.

A version is an MLflow 3 LoggedModel whose source run is the trial's run. It holds the pyfunc
(_served_model.py with the base and the adapter as artifacts) and, under onnx/, the exports with the
parity report. Versions are never deleted or moved between aliases by hand: `champion` moves to a
new version only when its gate passed, and the version it leaves stays as it was.

A promotion is several writes (LoggedModel, its artifacts, the version, the alias) that no store
makes atomic, so the LoggedModel carries its progress (record.promotion_tags): a promote killed
half-way leaves it "started", and the next promote of the same run finds it (`unfinished`) and
completes it instead of registering another version. Two promotes to one registered model at the
same time take turns (_ownership.turn holds a lock), and the second finds what the first registered.
A half-done promotion is completed only after its copies of the adapters (the pyfunc's artifacts,
which the registry serves: `download_adapters`) are checked against their runs' hashes again.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from importlib.metadata import version as installed
from pathlib import Path

import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.entities import LoggedModel, LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from ..record import (
    PROMOTED_TO_TAG,
    PROMOTER_TAG,
    PROMOTION_DONE,
    PROMOTION_FAILED,
    PROMOTION_STARTED,
    PROMOTION_TAG,
    STUDY_TAG,
    promotion_tags,
)
from ..recovery import died_here

CHAMPION = "champion"
SERVED_MODEL = Path(__file__).with_name("_served_model.py")


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no such model, or no champion yet
        return None


def register(
    client: MlflowClient,
    name: str,
    run_id: str,
    model_files: dict[str, Path],
    onnx_folder: Path,
    tags: dict[str, str],
    params: dict[str, str],
    description: str,
    max_new_tokens: int,
    scratch: Path,
    promoter: str,
    adapters: tuple[str, ...] = (),
) -> tuple[LoggedModel, ModelVersion]:
    """Log the pyfunc (artifacts: model_files) and the ONNX folder as one LoggedModel of the trial's
    run, and make it a new version of the registered model `name`. The LoggedModel stays "started"
    until `finish`. A bundle names its `adapters` (model_files' keys): the pyfunc takes the one to
    generate with as its `adapter` param, the first by default."""
    experiment_id = client.get_run(run_id).info.experiment_id
    choice = [ParamSpec("adapter", "string", adapters[0])] if adapters else []
    signature = ModelSignature(
        inputs=Schema([ColSpec("string")]),  # prompts
        outputs=Schema([ColSpec("string")]),  # their greedy continuations
        params=ParamSchema(
            [
                ParamSpec("max_new_tokens", "long", max_new_tokens),
                ParamSpec("batch_size", "long", 16),
                *choice,
            ]
        ),
    )
    try:
        logged = client.create_logged_model(
            experiment_id,
            name="model",
            source_run_id=run_id,
            params=params,
            tags={**tags, **promotion_tags(name, promoter)},
        )
        with tempfile.TemporaryDirectory(prefix="pyfunc-", dir=scratch) as pyfunc:
            folder = Path(pyfunc) / "model"
            mlflow.pyfunc.save_model(
                str(folder),
                python_model=str(SERVED_MODEL),
                artifacts={key: str(path) for key, path in model_files.items()},
                signature=signature,
                # Named, not inferred: inference loads the model in a subprocess to see its imports.
                pip_requirements=[f"{p}=={_release(p)}" for p in ("mlflow", "torch", "transformers", "peft")],
            )
            client.log_model_artifacts(logged.model_id, str(folder))
        client.log_model_artifacts(logged.model_id, str(onnx_folder), artifact_path="onnx")
    except BaseException:  # an error, Ctrl-C or SIGTERM: never leave it PENDING
        # Found by its promoter tag, not by `logged`: a signal may land after the store wrote the
        # model and before create_logged_model returned it.
        for mine in _ours(client, experiment_id, run_id):
            if mine.status == LoggedModelStatus.PENDING and mine.tags.get(PROMOTER_TAG) == promoter:
                _fail(client, mine)
        raise
    logged = client.finalize_logged_model(logged.model_id, "READY")
    return logged, version_of(client, name, logged, description)


def unfinished(
    client: MlflowClient, name: str, run_id: str, log: Callable[[str], None] = print
) -> LoggedModel | None:
    """The READY LoggedModel that an earlier promote of this run made for `name` and did not finish
    (its version, exports or alias may be missing), if any. On the way, the PENDING ones that a
    promote of this machine left when it died are finalized FAILED: they never got all their files."""
    experiment_id = client.get_run(run_id).info.experiment_id
    found = None
    for logged in _ours(client, experiment_id, run_id):
        tags = logged.tags
        if logged.status == LoggedModelStatus.PENDING:
            promoter = tags.get(PROMOTER_TAG)
            if promoter is None or died_here(promoter):  # None: a lorasweep from before the tag
                log(f"marking logged model {logged.model_id} FAILED: the promote that made it died")
                _fail(client, logged)
        elif (
            logged.status == LoggedModelStatus.READY
            and tags.get(PROMOTED_TO_TAG) == name
            and tags.get(PROMOTION_TAG) == PROMOTION_STARTED
            and (found is None or logged.creation_timestamp > found.creation_timestamp)
        ):
            found = logged
    return found


def version_of(client: MlflowClient, name: str, logged: LoggedModel, description: str) -> ModelVersion:
    """The version of `name` that holds `logged`: the one an earlier, killed promote created, or a
    new one, tagged with the LoggedModel's tags (less the bookkeeping)."""
    run_id = logged.source_run_id
    for version in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
        # The SQL registry keeps no model_id on a version (MLflow 3.17): the source names the model.
        if version.model_id == logged.model_id or version.source == logged.artifact_location:
            return version
    try:
        client.create_registered_model(name, description="LoRA fine-tunes promoted by lorasweep")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    bookkeeping = (PROMOTED_TO_TAG, PROMOTION_TAG, PROMOTER_TAG)
    return client.create_model_version(
        name,
        source=logged.artifact_location,
        run_id=run_id,
        tags={k: v for k, v in logged.tags.items() if k not in bookkeeping and not k.startswith("mlflow.")},
        description=description,
        model_id=logged.model_id,
    )


def download_exports(client: MlflowClient, logged: LoggedModel, out: Path, scratch: Path) -> None:
    """The ONNX folder logged with `logged` (exports and parity.json), into the empty folder `out`."""
    onnx = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{logged.artifact_location}/onnx",
        dst_path=tempfile.mkdtemp(prefix="onnx-", dir=scratch),
        tracking_uri=client.tracking_uri,
    )
    for item in Path(onnx).iterdir():
        shutil.move(item, out / item.name)


def download_adapters(
    client: MlflowClient, logged: LoggedModel, names: tuple[str, ...], scratch: Path
) -> dict[str, Path]:
    """The pyfunc's copies of the adapters `names` (its artifacts' keys: "adapter", or a bundle's
    trial-N), as `logged` serves them, found where its MLmodel says they were saved."""
    import yaml

    folder = Path(tempfile.mkdtemp(prefix="pyfunc-", dir=scratch))
    mlmodel = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{logged.artifact_location}/MLmodel",
        dst_path=str(folder),
        tracking_uri=client.tracking_uri,
    )
    saved = yaml.safe_load(Path(mlmodel).read_text())["flavors"]["python_function"].get("artifacts", {})
    found = {}
    for name in names:
        if name not in saved:  # a pyfunc without this adapter: nothing to check it against
            found[name] = folder / "missing" / name
            found[name].mkdir(parents=True)
            continue
        found[name] = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"{logged.artifact_location}/{saved[name]['path']}",
                dst_path=str(folder / name),
                tracking_uri=client.tracking_uri,
            )
        )
    return found


def fail(client: MlflowClient, logged: LoggedModel) -> None:
    """`logged` is not to be completed: a promote made it that the next one must not take over."""
    _fail(client, logged)


def finish(client: MlflowClient, logged: LoggedModel) -> None:
    """The promotion of `logged` is complete: version, exports, run tag and alias are in place."""
    client.set_logged_model_tags(logged.model_id, {PROMOTION_TAG: PROMOTION_DONE})


def _ours(client: MlflowClient, experiment_id: str, run_id: str) -> list[LoggedModel]:
    """The LoggedModels that promote made from the run (version_tags put the study on each)."""
    found = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
    return [m for m in found if STUDY_TAG in m.tags]


def _fail(client: MlflowClient, logged: LoggedModel) -> None:
    client.finalize_logged_model(logged.model_id, "FAILED")
    client.set_logged_model_tags(logged.model_id, {PROMOTION_TAG: PROMOTION_FAILED})


def _release(package: str) -> str:
    return installed(package).split("+")[0]  # 2.13.0+cpu is a local build; PyPI knows 2.13.0
