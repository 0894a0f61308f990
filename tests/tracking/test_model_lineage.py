"""From a registered model version to the stage run that logged it, its pipeline run and its sibling stages."""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from reca.tracking.mlflow_run import stage_run
from reca.tracking.model_lineage import model_version_lineage
from reca_fixtures.models import build_tiny_adapter
from reca_fixtures.tracking import isolated_mlflow_store


@pytest.fixture
def pipeline_with_model(tmp_path, monkeypatch):
    """A keyed pipeline run: `train` logs a tiny saved model, `evaluate` runs after it."""
    client, uri = isolated_mlflow_store(tmp_path, monkeypatch)
    monkeypatch.setenv("RECA_PIPELINE_KEY", "nightly-1")
    monkeypatch.chdir(tmp_path)
    build_tiny_adapter().save_pretrained(tmp_path / "models" / "reca")
    with stage_run("train") as train:
        train.log_artifact(tmp_path / "models" / "reca", artifact_path="model", link=True)
    with stage_run("evaluate") as evaluate:
        evaluate.log_metrics({"reca.overall": 0.25})
    return client, uri, train.run_id, evaluate.run_id


def test_a_version_registered_from_a_run_leads_to_its_pipeline_and_stages(pipeline_with_model):
    client, uri, train_id, evaluate_id = pipeline_with_model
    # As `train` registers: the run's `model` artifact directory, linked to the run.
    client.create_registered_model("reca-tiny")
    source = f"{client.get_run(train_id).info.artifact_uri}/model"
    version = client.create_model_version("reca-tiny", source=source, run_id=train_id)
    lineage = model_version_lineage("reca-tiny", version.version, tracking_uri=uri)
    assert lineage.run.info.run_id == train_id
    assert lineage.parent is not None and lineage.parent.data.tags["reca.kind"] == "pipeline"
    assert lineage.parent.data.tags["reca.pipeline_key"] == "nightly-1"
    assert [r.info.run_id for r in lineage.stages] == [train_id, evaluate_id]
    assert lineage.stage("evaluate").data.metrics["reca.overall"] == 0.25


def test_a_version_registered_from_a_logged_model_is_followed_to_its_source_run(pipeline_with_model):
    client, uri, train_id, _ = pipeline_with_model
    train = client.get_run(train_id)
    logged = client.create_logged_model(train.info.experiment_id, name="reca", source_run_id=train_id)
    client.create_registered_model("reca-logged")
    version = client.create_model_version("reca-logged", source=f"models:/{logged.model_id}",
                                          model_id=logged.model_id)
    lineage = model_version_lineage("reca-logged", version.version, tracking_uri=uri)
    assert lineage.run.info.run_id == train_id
    assert lineage.parent.info.run_id == train.data.tags["mlflow.parentRunId"]


def test_a_version_without_a_run_is_a_clear_error(pipeline_with_model, tmp_path):
    client, uri, _, _ = pipeline_with_model
    client.create_registered_model("orphan")
    client.create_model_version("orphan", source=(tmp_path / "models" / "reca").as_uri())
    with pytest.raises(LookupError, match="orphan/1 .* not linked to a run"):
        model_version_lineage("orphan", 1, tracking_uri=uri)


def test_a_logged_model_shares_its_bytes_with_the_stage_output_in_a_local_store(pipeline_with_model, tmp_path):
    client, _, train_id, _ = pipeline_with_model
    import mlflow

    output = tmp_path / "models" / "reca"
    downloaded = Path(mlflow.artifacts.download_artifacts(run_id=train_id, artifact_path="model",
                                                          dst_path=str(tmp_path / "download")))
    store = Path(urllib.request.url2pathname(urllib.parse.urlparse(
        f"{client.get_run(train_id).info.artifact_uri}/model").path))
    files = sorted(p.relative_to(output) for p in output.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(downloaded) for p in downloaded.rglob("*") if p.is_file())
    for name in files:
        assert (downloaded / name).read_bytes() == (output / name).read_bytes()
        # one copy on disk: the run's artifact is the output's file (a hard link), not a second copy
        assert (store / name).stat().st_ino == (output / name).stat().st_ino
    with stage_run("evaluate") as other:  # without link: a copy, as for every other artifact
        other.log_artifact(output, artifact_path="copied")
    copied = Path(urllib.request.url2pathname(urllib.parse.urlparse(
        f"{client.get_run(other.run_id).info.artifact_uri}/copied").path))
    assert (copied / files[0]).stat().st_ino != (output / files[0]).stat().st_ino
