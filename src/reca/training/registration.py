"""The final model in the MLflow model registry, and its evaluation metrics on the version.

`train` registers the model it exports (rank 0) and leaves a small pointer
file in the model directory; `evaluate` reads the pointer and tags that model
version with the metrics it measured, so the registry shows each version with
its scores and links back to the run that trained it. Only consolidated
HF-format weights are ever uploaded, never sharded optimizer state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reca.fileio import read_json, write_json

POINTER = "reca_registered_model.json"


def register(run_id: str, name: str, artifact_path: str = "model") -> dict[str, Any]:
    """Create (if needed) registered model ``name`` and a version whose source is the run's artifact."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description="RecA post-trained unified multimodal model")
    run = client.get_run(run_id)
    source = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
    version = client.create_model_version(name, source=source, run_id=run_id)
    return {"name": name, "version": str(version.version), "run_id": run_id}


def write_pointer(model_dir: str | Path, info: dict[str, Any]) -> None:
    write_json(Path(model_dir) / POINTER, info)


def read_pointer(model_dir: str | Path) -> dict[str, Any] | None:
    path = Path(model_dir) / POINTER
    return read_json(path) if path.exists() else None


def tag_version_with_metrics(model_dir: str | Path, metrics: dict[str, float], prefix: str = "eval.") -> bool:
    """Tag the registered version behind ``model_dir`` with ``metrics``; False if it was never registered."""
    info = read_pointer(model_dir)
    if info is None:
        return False
    import mlflow

    client = mlflow.MlflowClient()
    for key, value in metrics.items():
        client.set_model_version_tag(info["name"], info["version"], f"{prefix}{key}", f"{value:.6g}")
    return True
