"""Parent and child MLflow runs of a real `dvc repro`, with the dvc.lock hashes of each stage's inputs.

A two-stage DVC pipeline in a temporary git repository; each stage is a tiny
script that opens :func:`reca.tracking.mlflow_run.stage_run`, so the tests see
what the pipeline's own stages record, with DVC as the launcher.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from reca_fixtures.tools import make_dvc_repo, run_tool, two_stage_dvc_yaml

BIN = Path(sys.executable).parent
STAGE_SCRIPT = """\
import sys
from pathlib import Path
from reca.tracking.mlflow_run import stage_run

name, src, out = sys.argv[1:4]
with stage_run(name) as run:
    run.log_metrics({"value": float(len(name))})
    Path(out).write_text(Path(src).read_text() + name)
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = make_dvc_repo(tmp_path_factory.mktemp("lineage"), {
        "data/a.txt": "hello",
        "stage.py": STAGE_SCRIPT,
        "params.yaml": "first:\n  value: 1\n",
        # DVC would append its outs here; listing them up front keeps the tree clean (git.dirty false).
        ".gitignore": "/mid.txt\n/final.txt\n",
        "dvc.yaml": two_stage_dvc_yaml("first", "second", "data", params="first"),
    })
    run_tool([BIN / "dvc", "repro"], root)
    return root


def _client(root: Path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reca")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return client, runs


def _parents(runs):
    return [r for r in runs if r.data.tags.get("reca.kind") == "pipeline"]


def test_dvc_repro_makes_one_parent_with_one_child_per_stage(repo):
    client, runs = _client(repo)
    (parent,) = _parents(runs)
    assert parent.data.tags["reca.launcher"] == "dvc"
    assert parent.info.status == "FINISHED"
    from reca.tracking.model_lineage import stage_runs

    children = stage_runs(client, parent.info.run_id)
    assert [c.data.tags["reca.stage"] for c in children] == ["first", "second"]
    assert all(c.info.status == "FINISHED" for c in children)
    # The parent carries the children's final metrics and the params file.
    assert parent.data.metrics == {"first.value": 5.0, "second.value": 6.0}
    assert "params.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_stage_runs_carry_git_and_the_dvc_lock_hashes_of_their_inputs(repo):
    client, runs = _client(repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    head = run_tool(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    for run in runs:
        if run.data.tags.get("reca.kind") == "pipeline":
            continue
        stage = run.data.tags["reca.stage"]
        tags = run.data.tags
        assert tags["git.commit"] == head and tags["git.dirty"] == "false"
        assert tags["dvc.stage"] == stage
        expected = {f"dvc.dep.{d['path']}": d["md5"] for d in lock["stages"][stage]["deps"]}
        got = {k: v for k, v in tags.items() if k.startswith("dvc.dep.")}
        assert got == expected
        assert "params.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # A directory dep is recorded as DVC's directory hash.
    first = next(r for r in runs if r.data.tags.get("reca.stage") == "first")
    assert first.data.tags["dvc.dep.data"].endswith(".dir")


@pytest.mark.slow
def test_a_dvc_experiment_in_a_temporary_copy_logs_to_the_repository_store_under_its_name(repo):
    run_tool([BIN / "dvc", "exp", "run", "--temp", "-n", "first-v2", "-S", "first.value=2"], repo)
    client, runs = _client(repo)
    (parent,) = [p for p in _parents(runs) if p.data.tags.get("dvc.exp_name") == "first-v2"]
    assert parent.info.run_name == "first-v2" and parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    # Only `first` reads the changed param; `second`'s input is unchanged and comes from the run cache.
    assert [c.data.tags["reca.stage"] for c in children] == ["first"]
    assert children[0].data.tags["dvc.exp_name"] == "first-v2"
    assert children[0].data.tags["dvc.dep.data"].endswith(".dir")
