"""The MLflow Model Registry side of promotion: one pyfunc version per promoted trial, and the alias.

A version is an MLflow 3 LoggedModel whose source run is the trial's run. It holds the pyfunc
(_served_model.py with the base and the adapter as artifacts) and, under onnx/, the exports with the
parity report. Versions are never deleted or moved between aliases by hand: `champion` moves to a
new version only when its gate passed, and the version it leaves stays as it was.
"""

from __future__ import annotations

import tempfile
from importlib.metadata import version as installed
from pathlib import Path

import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

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
) -> ModelVersion:
    """Log the pyfunc (artifacts: model_files) and the ONNX folder as one LoggedModel of the trial's
    run, and make it a new version of the registered model `name`."""
    experiment_id = client.get_run(run_id).info.experiment_id
    signature = ModelSignature(
        inputs=Schema([ColSpec("string")]),  # prompts
        outputs=Schema([ColSpec("string")]),  # their greedy continuations
        params=ParamSchema(
            [ParamSpec("max_new_tokens", "long", max_new_tokens), ParamSpec("batch_size", "long", 16)]
        ),
    )
    logged = client.create_logged_model(
        experiment_id, name="model", source_run_id=run_id, params=params, tags=tags
    )
    try:
        with tempfile.TemporaryDirectory(prefix="lorasweep-pyfunc-") as scratch:
            folder = Path(scratch) / "model"
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
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    try:
        client.create_registered_model(name, description="LoRA fine-tunes promoted by lorasweep")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return client.create_model_version(
        name,
        source=logged.artifact_location,
        run_id=run_id,
        tags=tags,
        description=description,
        model_id=logged.model_id,
    )


def _release(package: str) -> str:
    return installed(package).split("+")[0]  # 2.13.0+cpu is a local build; PyPI knows 2.13.0
