"""Read pipeline runs back from MLflow as plain data: which runs, their stages, metrics, curves and grids.

A *pipeline run* is a parent run (``reca.kind = pipeline``) whose children
are its stage runs; a stage run given on its own is reported as a pipeline of
one stage. Nothing here draws or formats: :mod:`reca.reporting.html` does.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reca.tracking.model_lineage import stage_runs
from reca.tracking.pipeline_runs import KIND_TAG

#: stage whose metrics are ``<model>.<metric>`` scores of several models
EVALUATE_STAGE = "evaluate"
#: artifact folder of the evaluate stage holding its sample grids
GRID_FOLDER = "report"
#: metric-name prefix of training curves
LOSS_PREFIX = "loss"
#: a grid larger than this is left out of the report rather than bloating it
MAX_IMAGE_BYTES = 5 * 1024 * 1024
#: run tags shown in the report's run table
SHOWN_TAGS = ("git.commit", "git.dirty", "dvc.exp_name", "reca.launcher", "prefect.deployment")


@dataclass
class StageSummary:
    """One stage run: final metrics, params, loss curves and (for evaluate) sample grids."""

    stage: str
    run_id: str
    status: str
    metrics: dict[str, float]
    params: dict[str, str]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)


@dataclass
class RunSummary:
    """One pipeline run and its stages, latest run of each stage name."""

    run_id: str
    name: str
    status: str
    start_time: int
    tags: dict[str, str]
    stages: dict[str, StageSummary]
    label: str = ""

    def evaluation(self) -> dict[str, dict[str, float]]:
        """Evaluate's scores as ``{model: {metric: value}}`` (its metrics are ``<model>.<metric>``)."""
        stage = self.stages.get(EVALUATE_STAGE)
        out: dict[str, dict[str, float]] = {}
        for key, value in (stage.metrics if stage else {}).items():
            model, _, metric = key.partition(".")
            if metric:
                out.setdefault(model, {})[metric] = value
        return out

    def params(self) -> dict[str, str]:
        """Every stage's params in one mapping (stages prefix their keys with their section)."""
        merged: dict[str, str] = {}
        for stage in self.stages.values():
            merged.update(stage.params)
        return merged


def select_runs(client, experiment_id: str, run_ids: list[str], last: int | None,  # noqa: ANN001 - MlflowClient
                exp_names: list[str]) -> list[Any]:
    """The runs to report: the given ids, the pipeline runs of DVC experiments, and/or the latest pipeline runs.

    With nothing selected, the latest pipeline run.

    Raises:
        LookupError: a run id or experiment name matches nothing, or the store has no pipeline run.
    """
    runs = []
    for run_id in run_ids:
        try:
            runs.append(client.get_run(run_id))
        except Exception as err:  # noqa: BLE001 - MLflow raises its own exception types for a missing run
            raise LookupError(f"no MLflow run {run_id!r} in {client.tracking_uri}: {err}") from None
    pipeline = f"tags.`{KIND_TAG}` = 'pipeline'"
    for name in exp_names:
        found = client.search_runs([experiment_id], filter_string=f"{pipeline} and tags.`dvc.exp_name` = '{name}'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
        if not found:
            raise LookupError(f"no pipeline run of DVC experiment {name!r} (tag dvc.exp_name) in "
                              f"{client.tracking_uri}")
        runs.append(found[0])
    if last or not runs:
        latest = client.search_runs([experiment_id], filter_string=pipeline, order_by=["attributes.start_time DESC"],
                                    max_results=last or 1)
        if not latest and not runs:
            raise LookupError(f"no pipeline runs in {client.tracking_uri}: run `dvc repro` or the Prefect flow, "
                              "or pass run ids")
        runs += list(reversed(latest))
    unique = {r.info.run_id: r for r in runs}
    return list(unique.values())


def _curves(client, run: Any) -> dict[str, list[tuple[int, float]]]:  # noqa: ANN001 - MlflowClient
    return {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
            for key in sorted(run.data.metrics) if key.startswith(LOSS_PREFIX)}


def _grids(client, run_id: str) -> dict[str, bytes]:  # noqa: ANN001 - MlflowClient
    images: dict[str, bytes] = {}
    try:
        listed = client.list_artifacts(run_id, GRID_FOLDER)
    except OSError:
        return images
    with tempfile.TemporaryDirectory(prefix="reca-report-") as tmp:
        for item in listed:
            if item.is_dir or not item.path.endswith(".png") or (item.file_size or 0) > MAX_IMAGE_BYTES:
                continue
            local = client.download_artifacts(run_id, item.path, tmp)
            images[Path(item.path).name] = Path(local).read_bytes()
    return images


def summarize_stage(client, run: Any) -> StageSummary:  # noqa: ANN001 - MlflowClient
    """Everything the report shows about one stage run."""
    stage = run.data.tags.get("reca.stage", run.info.run_name or run.info.run_id)
    return StageSummary(
        stage=stage,
        run_id=run.info.run_id,
        status=run.info.status,
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
        curves=_curves(client, run),
        images=_grids(client, run.info.run_id) if stage == EVALUATE_STAGE else {},
    )


def summarize_run(client, run: Any) -> RunSummary:  # noqa: ANN001 - MlflowClient
    """A pipeline run with its stages (latest of each name), or a stage run as a pipeline of one."""
    # Oldest first, so a stage rerun within the same pipeline run wins below.
    children = stage_runs(client, run.info.run_id) if run.data.tags.get(KIND_TAG) == "pipeline" else [run]
    stages = {}
    for child in children:
        summary = summarize_stage(client, child)
        stages[summary.stage] = summary
    return RunSummary(run_id=run.info.run_id, name=run.info.run_name or run.info.run_id[:8],
                      status=run.info.status, start_time=run.info.start_time or 0,
                      tags={k: run.data.tags[k] for k in SHOWN_TAGS if k in run.data.tags}, stages=stages)


def label_runs(runs: list[RunSummary]) -> None:
    """Give each run a short unique label: its name, plus its id prefix where names repeat."""
    names = [r.name for r in runs]
    for run in runs:
        run.label = run.name if names.count(run.name) == 1 else f"{run.name} ({run.run_id[:7]})"
