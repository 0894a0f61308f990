"""MLflow runs for pipeline stages: local by default, rank 0 only, with lineage tags.

Every stage run is one MLflow run in the experiment ``reca`` (``RECA_EXPERIMENT``
overrides). Without ``MLFLOW_TRACKING_URI`` the store is local to the
repository: ``sqlite:///mlflow.db`` with artifacts under ``mlartifacts/``
(both git-ignored), so ``mlflow ui --backend-store-uri sqlite:///mlflow.db``
shows every run. When a pipeline flow sets ``RECA_PARENT_RUN_ID``, stage runs
become its children.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reca.training.distributed import is_rank_zero

PARENT_ENV = "RECA_PARENT_RUN_ID"
EXPERIMENT_ENV = "RECA_EXPERIMENT"


def tracking_uri(root: Path) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` or the repository-local sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def lineage_tags(root: Path) -> dict[str, str]:
    """Git commit and dirty flag of the working tree the stage ran in."""
    commit = _git(root, "rev-parse", "HEAD")
    dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no")) if commit else False
    return {"git.commit": commit or "unknown", "git.dirty": str(dirty).lower()}


class StageRun:
    """Thin handle over an active MLflow run; a no-op on ranks other than 0."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self.run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        if self.active:
            import mlflow

            mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.active:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active and Path(path).exists():
            import mlflow

            if Path(path).is_dir():
                mlflow.log_artifacts(str(path), artifact_path=artifact_path)
            else:
                mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.active:
            import mlflow

            mlflow.set_tags(tags)


def _set_experiment(root: Path) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(root))
    name = os.environ.get(EXPERIMENT_ENV, "reca")
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=(root / "mlartifacts").resolve().as_uri())
    mlflow.set_experiment(name)


@contextlib.contextmanager
def pipeline_run(name: str, root: str | Path = ".") -> Iterator[str]:
    """A parent run for one pipeline run; yields its id for ``RECA_PARENT_RUN_ID``."""
    import mlflow

    root = Path(root)
    _set_experiment(root)
    run = mlflow.start_run(run_name=name, tags={"reca.kind": "pipeline", **lineage_tags(root)})
    try:
        params_file = root / "params.yaml"
        if params_file.exists():
            mlflow.log_artifact(str(params_file))
        yield run.info.run_id
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


@contextlib.contextmanager
def stage_run(stage: str, root: str | Path = ".", params_file: str | Path | None = "params.yaml") -> Iterator[StageRun]:
    """Open an MLflow run for ``stage`` (rank 0 only) and close it, FAILED on error."""
    root = Path(root)
    if not is_rank_zero():
        yield StageRun(active=False)
        return
    import mlflow

    _set_experiment(root)
    tags = {"reca.stage": stage, **lineage_tags(root)}
    parent = os.environ.get(PARENT_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = mlflow.start_run(run_name=stage, tags=tags)
    handle = StageRun(active=True)
    handle.run_id = run.info.run_id
    try:
        if params_file is not None and Path(params_file).exists():
            mlflow.log_artifact(str(params_file))
        yield handle
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")
