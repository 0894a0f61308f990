"""MLflow runs for pipeline stages: local by default, rank 0 only, with lineage tags and a parent run.

Every stage run is one MLflow run in the experiment ``reca`` (``RECA_EXPERIMENT``
overrides). Without ``MLFLOW_TRACKING_URI`` the store is local to the
repository: ``sqlite:///mlflow.db`` with artifacts under ``mlartifacts/``
(both git-ignored), so ``mlflow ui --backend-store-uri sqlite:///mlflow.db``
shows every run. "The repository" is ``DVC_ROOT`` when DVC launched the stage:
``dvc exp run --temp`` and queued experiments run in a temporary copy, and
their runs must land in the user's store, not in a directory DVC deletes.

Each stage run carries the lineage tags of :mod:`reca.tracking.lineage` and
``params.yaml`` as an artifact, and is the child of one parent run per
pipeline run (:mod:`reca.tracking.pipeline_runs` says how the parent is found
for a Prefect flow run, a ``dvc repro`` or a ``dvc exp run``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reca.tracking.lineage import DVC_ROOT_ENV, git_tags, lineage_tags
from reca.tracking.pipeline_runs import (
    KIND_TAG,
    LAUNCHER_TAG,
    PARENT_ENV,
    PARENT_TAG,
    close_stage_in_parent,
    resolve_parent,
)

__all__ = ["EXPERIMENT_ENV", "PARENT_ENV", "StageRun", "lineage_tags", "pipeline_run", "stage_run",
           "tracking_uri"]

log = logging.getLogger(__name__)

EXPERIMENT_ENV = "RECA_EXPERIMENT"
DEFAULT_EXPERIMENT = "reca"


#: set by `reca train`'s launcher for its workers: the MLflow run rank 0 logs into
STAGE_RUN_ENV = "RECA_STAGE_RUN_ID"


def store_root(root: str | Path) -> Path:
    """Directory holding the local store: ``DVC_ROOT`` under DVC, else ``root``."""
    return Path(os.environ.get(DVC_ROOT_ENV) or root).resolve()


def tracking_uri(root: str | Path) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` or the repository-local sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root(root) / 'mlflow.db'}"


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

    def log_artifact(self, path: str | Path, artifact_path: str | None = None, *, link: bool = False) -> None:
        """Log a file or directory; with ``link``, hard-link it into a local artifact store instead of copying.

        ``link`` is for model directories: their files are written once and
        replaced, never edited in place (atomic writes), so the run's copy and
        the stage output can share their bytes on disk. Remote stores, other
        file systems and links refused by the OS fall back to a copy.
        """
        if self.active and link and Path(path).exists() and _link_into_local_store(Path(path), artifact_path):
            return
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


def _link_into_local_store(path: Path, artifact_path: str | None) -> bool:
    """Hard-link ``path`` under the active run's local artifact directory; False if the store is not local."""
    import mlflow

    uri = urllib.parse.urlparse(mlflow.get_artifact_uri(artifact_path))
    if uri.scheme not in ("", "file"):
        return False
    dest_root = Path(urllib.request.url2pathname(uri.path))
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for source in files:
        dest = dest_root / (source.relative_to(path) if path.is_dir() else source.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        try:
            os.link(source, dest)
        except OSError:  # another file system, or links not allowed: a copy is still a correct artifact
            shutil.copy2(source, dest)
    return True


def set_experiment(root: str | Path) -> str:
    """Point MLflow at the store and experiment for ``root``; return the experiment id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(root))
    name = os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        artifacts = (store_root(root) / "mlartifacts").as_uri()
        experiment_id = mlflow.create_experiment(name, artifact_location=artifacts)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@contextlib.contextmanager
def pipeline_run(name: str, root: str | Path = ".", tags: dict[str, str] | None = None) -> Iterator[str]:
    """A parent run owned by the caller (a Prefect flow run); yields its id for ``RECA_PARENT_RUN_ID``."""
    import mlflow

    root = Path(root)
    set_experiment(root)
    all_tags = {KIND_TAG: "pipeline", LAUNCHER_TAG: "prefect", **git_tags(root), **(tags or {})}
    run = mlflow.start_run(run_name=name, tags=all_tags)
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
    """Open an MLflow run for ``stage`` (rank 0 only), a child of its pipeline run; close it FAILED on error."""
    # Imported here: it imports torch, which the flow and `reca report` never need.
    from reca.distributed import is_rank_zero

    root = Path(root)
    if not is_rank_zero():
        yield StageRun(active=False)
        return
    import mlflow

    launched_run = os.environ.get(STAGE_RUN_ENV)
    if launched_run:
        # A worker started by `reca train`'s launcher: log into the launcher's run,
        # which the launcher (not this worker) finishes or fails.
        set_experiment(root)
        mlflow.start_run(run_id=launched_run)
        handle = StageRun(active=True)
        handle.run_id = launched_run
        try:
            yield handle
        finally:
            mlflow.end_run(status="RUNNING")
        return

    experiment_id = set_experiment(root)
    client = mlflow.MlflowClient()
    params_path = Path(params_file) if params_file is not None else None
    tags = {"reca.stage": stage, **lineage_tags(root, params_path)}
    parent = resolve_parent(client, experiment_id, tags, params_path)
    if parent is not None:
        tags[PARENT_TAG] = parent.run_id
    run = mlflow.start_run(run_name=stage, tags=tags)
    handle = StageRun(active=True)
    handle.run_id = run.info.run_id
    status = "FAILED"
    try:
        if params_path is not None and params_path.exists():
            mlflow.log_artifact(str(params_path))
        yield handle
        status = "FINISHED"
    finally:
        mlflow.end_run(status=status)
        if parent is not None:
            try:
                close_stage_in_parent(client, parent, handle.run_id, stage, status)
            except Exception as err:  # noqa: BLE001 - the stage's own outcome must not be masked by bookkeeping
                log.warning("could not update pipeline run %s after stage %s: %s", parent.run_id, stage, err)
