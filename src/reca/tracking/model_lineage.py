"""From a registered model version back to the runs that made it, and from a pipeline run to its stages.

The registry points a model version at the run that logged it (the `train`
stage run); that run's ``mlflow.parentRunId`` tag points at the pipeline run;
the pipeline run's children are every stage of that pipeline run, each with
its lineage tags (git commit, ``dvc.lock`` hashes of its inputs). These
helpers walk that chain, whoever registered the model and however (a plain
``runs:/`` source, an artifact URI, or an MLflow 3 logged model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reca.tracking.pipeline_runs import PARENT_TAG


@dataclass
class ModelLineage:
    """A model version, the run that produced it, that run's pipeline run and its stage runs."""

    name: str
    version: str
    run: Any  # mlflow.entities.Run
    parent: Any | None = None  # mlflow.entities.Run
    stages: list[Any] = field(default_factory=list)

    def stage(self, name: str) -> Any | None:
        """The latest stage run named ``name`` (``reca.stage`` tag) in this pipeline run."""
        matching = [r for r in self.stages if r.data.tags.get("reca.stage") == name]
        return max(matching, key=lambda r: r.info.start_time) if matching else None


def _client(tracking_uri: str | None):  # noqa: ANN202 - MlflowClient
    import mlflow

    # The registry too: left unset, MLflow takes it from the process-wide tracking URI, not this one.
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def run_of_model_version(client, name: str, version: str | int) -> Any:  # noqa: ANN001 - MlflowClient
    """The run a registered model version came from.

    Raises:
        LookupError: the version names no run (registered from a bare path).
    """
    mv = client.get_model_version(name, str(version))
    run_id = mv.run_id
    if not run_id and getattr(mv, "model_id", None):
        # MLflow 3 logged models: the version points at the model, the model at its run.
        run_id = client.get_logged_model(mv.model_id).source_run_id
    if not run_id:
        raise LookupError(f"model version {name}/{version} (source {mv.source}) is not linked to a run")
    return client.get_run(run_id)


def parent_of(client, run: Any) -> Any | None:  # noqa: ANN001 - MlflowClient
    """The pipeline run ``run`` is a stage of, or ``None`` for a run without a parent."""
    parent_id = run.data.tags.get(PARENT_TAG)
    return client.get_run(parent_id) if parent_id else None


def stage_runs(client, parent_run_id: str) -> list[Any]:  # noqa: ANN001 - MlflowClient
    """Every child run of a pipeline run, oldest first."""
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=1000)


def model_version_lineage(name: str, version: str | int, tracking_uri: str | None = None) -> ModelLineage:
    """Resolve ``name``/``version`` to its run, the run's pipeline (parent) run and the pipeline's stages.

    Args:
        name: Registered model name.
        version: Model version number.
        tracking_uri: Store to query (default: MLflow's current tracking URI).
    """
    client = _client(tracking_uri)
    run = run_of_model_version(client, name, version)
    parent = parent_of(client, run)
    stages = stage_runs(client, parent.info.run_id) if parent is not None else [run]
    return ModelLineage(name=name, version=str(version), run=run, parent=parent, stages=stages)
