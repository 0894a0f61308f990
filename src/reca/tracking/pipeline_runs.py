"""One MLflow parent run per pipeline run, however the pipeline was started.

A stage run (:func:`reca.tracking.mlflow_run.stage_run`) becomes the child of
a parent run found in this order:

1. ``RECA_PARENT_RUN_ID``: a parent someone else opened and owns. The
   Prefect flow opens one per flow run (:func:`reca.tracking.mlflow_run.pipeline_run`)
   and its ``dvc repro`` children inherit the variable.
2. A *pipeline key* naming the invocation the stage belongs to, and the
   parent run tagged ``reca.pipeline_key`` with that key, created by the first
   stage that needs it:

   * ``RECA_PIPELINE_KEY`` if set (group several ``dvc repro`` calls, e.g. a
     cluster job id);
   * otherwise the enclosing ``dvc`` process (``dvc repro``, ``dvc exp run``,
     or one queued experiment's worker): its pid and start time identify that
     one invocation, and every stage DVC runs from it is its descendant.

   DVC runs stages one at a time, so the first stage creates the parent and
   the later ones find it. A keyed parent has no owner that outlives the
   stages, so each stage keeps its status honest: RUNNING while a stage runs,
   then FINISHED (or FAILED) with the end time of the last stage.
3. No key (a stage run by hand): a run with no parent.

When a stage run ends, its final metric values are copied to the parent as
``<stage>.<metric>``, so parents (one per DVC experiment, say) compare side
by side in the MLflow UI.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from reca.tracking.lineage import DVC_EXP_NAME_ENV

PARENT_ENV = "RECA_PARENT_RUN_ID"
KEY_ENV = "RECA_PIPELINE_KEY"
KEY_TAG = "reca.pipeline_key"
KIND_TAG = "reca.kind"
LAUNCHER_TAG = "reca.launcher"
PARENT_TAG = "mlflow.parentRunId"


@dataclass(frozen=True)
class Parent:
    """The parent run a stage run attaches to, and whether the stage side manages its status."""

    run_id: str
    keyed: bool


def is_dvc_command(cmdline: list[str]) -> bool:
    """Whether a process command line runs DVC: ``dvc ...``, ``python .../dvc ...`` or ``python -m dvc ...``."""
    names = [Path(part).name for part in cmdline[:3]]
    if names[:1] == ["dvc"]:
        return True
    if not names or not names[0].startswith("python"):
        return False
    return names[1:2] == ["dvc"] or cmdline[1:3] == ["-m", "dvc"]


def enclosing_dvc_process() -> tuple[int, float] | None:
    """``(pid, start time)`` of the nearest ``dvc`` process above this one, if any."""
    import psutil

    try:
        for proc in psutil.Process().parents():
            try:
                if is_dvc_command(proc.cmdline()):
                    return proc.pid, proc.create_time()
            except (psutil.AccessDenied, psutil.ZombieProcess):
                continue
    except psutil.NoSuchProcess:
        return None
    return None


def pipeline_key() -> tuple[str, str] | None:
    """``(key, launcher)`` of the pipeline invocation this process belongs to, or ``None``."""
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV], "env"
    found = enclosing_dvc_process()
    if found is None:
        return None
    pid, started = found
    return f"dvc:{socket.gethostname()}:{pid}:{started:.3f}", "dvc"


def find_keyed_parent(client, experiment_id: str, key: str) -> str | None:  # noqa: ANN001 - MlflowClient
    """Run id of the parent already created for ``key`` in the experiment, if any."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1,
                               order_by=["attributes.start_time ASC"])
    return found[0].info.run_id if found else None


def create_keyed_parent(client, experiment_id: str, key: str, launcher: str,  # noqa: ANN001 - MlflowClient
                        tags: dict[str, str], params_file: Path | None) -> str:
    """Create the parent run for ``key``, named after the DVC experiment when there is one."""
    exp_name = os.environ.get(DVC_EXP_NAME_ENV)
    name = exp_name or ("dvc repro" if launcher == "dvc" else f"pipeline {key}")
    run = client.create_run(experiment_id, run_name=name,
                            tags={KIND_TAG: "pipeline", LAUNCHER_TAG: launcher, KEY_TAG: key, **tags})
    if params_file is not None and params_file.exists():
        client.log_artifact(run.info.run_id, str(params_file))
    return run.info.run_id


def resolve_parent(client, experiment_id: str, lineage: dict[str, str],  # noqa: ANN001 - MlflowClient
                   params_file: Path | None) -> Parent | None:
    """The parent run for a stage starting now (see the module docstring for the order)."""
    explicit = os.environ.get(PARENT_ENV)
    if explicit:
        return Parent(explicit, keyed=False)
    found = pipeline_key()
    if found is None:
        return None
    key, launcher = found
    run_id = find_keyed_parent(client, experiment_id, key)
    if run_id is None:
        # Only invocation-wide tags: per-stage ones (dvc.dep.*, dvc.stage) belong to the children.
        shared = {k: v for k, v in lineage.items() if k.startswith("git.") or k.startswith("dvc.exp")}
        run_id = create_keyed_parent(client, experiment_id, key, launcher, shared, params_file)
    else:
        client.update_run(run_id, status="RUNNING")
    return Parent(run_id, keyed=True)


def roll_up_metrics(client, child_run_id: str, parent_run_id: str, stage: str) -> None:  # noqa: ANN001
    """Copy the child's final metric values to the parent as ``<stage>.<metric>``."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    values = client.get_run(child_run_id).data.metrics
    metrics = [Metric(f"{stage}.{key}", value, now, 0) for key, value in sorted(values.items())]
    for start in range(0, len(metrics), 900):  # log_batch accepts at most 1000 metrics
        client.log_batch(parent_run_id, metrics=metrics[start : start + 900])


def close_stage_in_parent(client, parent: Parent, child_run_id: str | None, stage: str,  # noqa: ANN001
                          status: str) -> None:
    """After a stage run ends: roll its metrics up, and settle a keyed parent's status."""
    if child_run_id is not None:
        roll_up_metrics(client, child_run_id, parent.run_id, stage)
    if parent.keyed:
        client.set_terminated(parent.run_id, status=status)
