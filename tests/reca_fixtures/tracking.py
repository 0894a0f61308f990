"""MLflow stores for tests, a stand-in for a stage's tracker, and a logged tiny pipeline run."""

from __future__ import annotations

from pathlib import Path

_MLFLOW_DB_TEMPLATE: list = []

def fresh_mlflow_store(directory) -> str:
    """A new, empty sqlite MLflow store ``<directory>/mlflow.db``; returns its tracking URI.

    MLflow builds a new database's schema in about 10 s (its migrations); the
    schema is built once per test session and copied for every store after that.
    """
    import shutil
    import tempfile

    if not _MLFLOW_DB_TEMPLATE:
        import mlflow

        template = Path(tempfile.mkdtemp(prefix="reca-mlflow-template-")) / "mlflow.db"
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
        _MLFLOW_DB_TEMPLATE.append(template)
    target = Path(directory) / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_MLFLOW_DB_TEMPLATE[0], target)
    return f"sqlite:///{target}"

class FakeTracker:
    """Records what a stage logs through its :class:`reca.tracking.mlflow_run.StageRun` handle."""

    def __init__(self):
        self.active = False  # like a StageRun on a non-zero rank: nothing reaches MLflow
        self.run_id = None
        self.metrics: dict = {}
        self.artifacts: list = []
        self.tags: dict = {}
        self.params: dict = {}

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    def log_artifact(self, path, artifact_path=None, *, link=False):
        self.artifacts.append(Path(path).name)

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_params(self, params):
        self.params.update(params)

def log_tiny_pipeline(root, key: str, *, exp_name: str | None = None, lr: float = 1e-3,
                      reca_score: float = 0.6) -> str:
    """Log one pipeline run through ``reca.tracking`` as the stages do; return the parent run id.

    `sft` and `train` log loss curves and params, `evaluate` logs per-model
    GenEval scores and a sample grid under ``report/``. The store is whatever
    ``MLFLOW_TRACKING_URI`` names; ``root`` holds params.yaml and the grid.
    """
    import os

    from PIL import Image

    from reca.tracking.mlflow_run import stage_run

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(f"train:\n  lr: {lr}\n")
    grid = root / "report" / "prompts.png"
    grid.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (96, 32), (200, 40, 40)).save(grid)
    saved = {k: os.environ.get(k) for k in ("RECA_PIPELINE_KEY", "DVC_EXP_NAME")}
    os.environ["RECA_PIPELINE_KEY"] = key
    if exp_name:
        os.environ["DVC_EXP_NAME"] = exp_name
    try:
        for stage, terms in (("sft", ("loss", "loss_t2i")), ("train", ("loss", "loss_reca"))):
            with stage_run(stage, root=root, params_file=root / "params.yaml") as run:
                run.log_params({f"{stage}.lr": lr, f"{stage}.steps": 4})
                for step in (2, 4):
                    run.log_metrics({t: 3.0 / step for t in terms}, step=step)
        with stage_run("evaluate", root=root, params_file=root / "params.yaml") as run:
            scores = {"sft": 0.4, "reca": reca_score}
            for model, score in scores.items():
                run.log_metrics({f"{model}.overall": score, f"{model}.single_object": score,
                                 f"{model}.single_object_prompts": 1.0, f"{model}.colors": score / 2,
                                 f"{model}.recon_psnr": 20.0})
            run.log_artifact(grid.parent, artifact_path="report")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    import mlflow

    return mlflow.get_run(run.run_id).data.tags["mlflow.parentRunId"]

def isolated_mlflow_store(tmp_path, monkeypatch):
    """A fresh MLflow store in ``tmp_path`` as ``MLFLOW_TRACKING_URI``, no pipeline variables inherited.

    Returns ``(client, uri)``; the client's registry is the same store.
    """
    import mlflow

    for var in ("RECA_PARENT_RUN_ID", "RECA_PIPELINE_KEY", "DVC_STAGE", "DVC_ROOT", "DVC_EXP_NAME"):
        monkeypatch.delenv(var, raising=False)
    uri = fresh_mlflow_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri), uri
