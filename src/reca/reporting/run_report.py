"""`reca report`: select runs, read them from MLflow, write the HTML report, log it back to MLflow.

One run: the report is logged to that run (artifact ``reca-report/report.html``),
next to what it describes. Several runs: to a new run named ``report``
(``reca.kind = report``, ``reca.report.runs`` listing the ids), so no reported
run is changed by a comparison that involves it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reca.fileio import write_text
from reca.reporting.collect import label_runs, select_runs, summarize_run
from reca.reporting.html import render
from reca.tracking.mlflow_run import DEFAULT_EXPERIMENT, EXPERIMENT_ENV, tracking_uri
from reca.tracking.pipeline_runs import KIND_TAG

ARTIFACT_DIR = "reca-report"
ARTIFACT_NAME = "report.html"


@dataclass
class ReportRequest:
    """Which runs to report, from which store."""

    run_ids: list[str] = field(default_factory=list)
    last: int | None = None
    exp_names: list[str] = field(default_factory=list)
    experiment: str | None = None
    tracking_uri: str | None = None
    title: str | None = None

    def resolved_uri(self) -> str:
        return self.tracking_uri or tracking_uri(Path.cwd())

    def resolved_experiment(self) -> str:
        return self.experiment or os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT)


def _log(client, experiment_id: str, runs: list[Any], path: Path) -> str:  # noqa: ANN001 - MlflowClient
    """Log the report to the one run it describes, or to a new `report` run; return that run's id.

    The artifact is always ``reca-report/report.html``, whatever the local file is called.
    """
    if len(runs) == 1:
        run_id = runs[0].run_id
    else:
        run_id = client.create_run(experiment_id, run_name="report", tags={
            KIND_TAG: "report", "reca.report.runs": ",".join(r.run_id for r in runs)}).info.run_id
    with tempfile.TemporaryDirectory(prefix="reca-report-") as tmp:
        shutil.copyfile(path, Path(tmp) / ARTIFACT_NAME)
        client.log_artifact(run_id, str(Path(tmp) / ARTIFACT_NAME), ARTIFACT_DIR)
    if len(runs) > 1:
        client.set_terminated(run_id, status="FINISHED")
    return run_id


def write_report(request: ReportRequest, out: str | Path, *, log_to_mlflow: bool = True) -> dict[str, Any]:
    """Write the HTML report of the requested runs to ``out``; log it to MLflow unless told not to.

    Returns:
        ``{"report": path, "runs": [run ids], "logged_to": run id or None}``.

    Raises:
        LookupError: the experiment, a run, or a DVC experiment name does not exist.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = request.resolved_uri()
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(request.resolved_experiment())
    if experiment is None:
        raise LookupError(f"no MLflow experiment {request.resolved_experiment()!r} in {uri}")
    selected = select_runs(client, experiment.experiment_id, request.run_ids, request.last, request.exp_names)
    runs = [summarize_run(client, run) for run in selected]
    label_runs(runs)
    title = request.title or "reca report: " + ", ".join(r.label for r in runs)
    out = Path(out)
    write_text(out, render(runs, title))
    logged_to = _log(client, experiment.experiment_id, runs, out) if log_to_mlflow else None
    return {"report": str(out), "runs": [r.run_id for r in runs], "logged_to": logged_to}
