"""The scheduled deployment against a real Prefect server on 127.0.0.1 (slow: a server start, a served run).

A tiny two-stage DVC repository stands in for the pipeline: `curate` fails on
its first attempt (a transient data error) and `train` logs an MLflow stage
run, so one served run shows the retries, the MLflow parent/child lineage and
the Prefect tags together.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from reca_fixtures import REPO
from reca_fixtures.tools import (
    BackgroundServer,
    free_port,
    make_dvc_repo,
    run_tool,
    tool_env,
    two_stage_dvc_yaml,
)

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
CRON = "0 3 * * *"
STAGE = """\
import sys
from pathlib import Path

name, src, out = sys.argv[1:4]
attempts = Path(f".attempts-{name}")
n = int(attempts.read_text()) + 1 if attempts.exists() else 1
attempts.write_text(str(n))
if name == "curate" and n == 1:
    sys.exit("curate: transient failure on purpose")
from reca.tracking.mlflow_run import stage_run

with stage_run(name) as run:
    run.log_metrics({"attempt": n})
    Path(out).write_text(Path(src).read_text() + name)
"""


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """A Prefect server with its own home; yields (api url, environment for clients)."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = tool_env(PREFECT_HOME=str(home), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    cmd = [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with BackgroundServer(cmd, f"{api}/health", home / "server.log", env=env, timeout=110):
        yield api, env


def _api(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def tiny_repo(tmp_path) -> Path:
    root = make_dvc_repo(tmp_path / "repo", {
        "stage.py": STAGE,
        "params.yaml": "x: 1\n",
        ".gitignore": "/mid.txt\n/final.txt\n.attempts-*\n",
        "dvc.yaml": two_stage_dvc_yaml("curate", "train", "raw"),
    })
    # Raw data tracked by a root .dvc file in a local remote, then removed: the flow's pull restores it.
    (root / "raw").mkdir()
    (root / "raw" / "a.txt").write_text("hi")
    dvc = BIN / "dvc"
    run_tool([dvc, "add", "raw"], root)
    run_tool([dvc, "remote", "add", "-d", "local", tmp_path / "remote"], root)
    run_tool([dvc, "push"], root)
    run_tool(["git", "add", "-A"], root)
    run_tool(["git", "commit", "-qm", "data"], root)
    (root / "raw" / "a.txt").unlink()
    return root


def _wait_for_run(api: str, run_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _api(f"{api}/flow_runs/{run_id}")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} still {run['state']['type']} after {timeout:.0f} s")


def test_served_deployment_runs_on_demand_with_retries_and_lineage(prefect_api, tiny_repo, tmp_path):
    api, env = prefect_api
    serve = [sys.executable, "flows/deploy.py", "--name", "test", "--cron", CRON, "--repo", tiny_repo,
             "--retry-delay", "1"]
    with BackgroundServer(serve, f"{api}/deployments/name/reca-pipeline/test", tmp_path / "serve.log", cwd=REPO,
                          env=env, timeout=60):
        deployment = _api(f"{api}/deployments/name/reca-pipeline/test")
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [CRON]
        assert deployment["parameters"]["repo"] == str(tiny_repo)
        flow_run = _api(f"{api}/deployments/{deployment['id']}/create_flow_run", {})
        finished = _wait_for_run(api, flow_run["id"], timeout=100)
    assert finished["state"]["type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-4000:]
    assert (tiny_repo / "raw" / "a.txt").read_text() == "hi"  # pulled
    assert (tiny_repo / ".attempts-curate").read_text() == "2"  # retried once as a data stage
    assert (tiny_repo / "final.txt").read_text() == "hicuratetrain"

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tiny_repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("reca").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("reca.kind") == "pipeline"]
    assert parent.data.tags["prefect.flow_run_id"] == flow_run["id"]
    assert parent.data.tags["prefect.deployment"] == "test"
    assert parent.info.status == "FINISHED"
    children = {r.data.tags["reca.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId")
                == parent.info.run_id}
    assert set(children) == {"curate", "train"}
    assert children["curate"].data.tags["dvc.dep.raw"].endswith(".dir")


def test_prefect_yaml_registers_the_nightly_deployment_on_a_work_pool(prefect_api):
    api, env = prefect_api
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"][0]
    pool = spec["work_pool"]["name"]
    prefect = str(BIN / "prefect")
    for cmd in ([prefect, "work-pool", "create", pool, "--type", "process"],
                [prefect, "--no-prompt", "deploy", "--all"]):
        out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, f"{cmd}:\n{out.stdout}\n{out.stderr}"
    deployment = _api(f"{api}/deployments/name/reca-pipeline/{spec['name']}")
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [spec["schedules"][0]["cron"]]
    assert deployment["work_pool_name"] == pool
    assert deployment["entrypoint"] == "flows/reca_pipeline.py:reca_pipeline"
    assert deployment["parameters"]["data_retries"] == spec["parameters"]["data_retries"]
    # Runs start in this checkout, wherever the worker runs from.
    steps = json.dumps(deployment["pull_steps"])
    assert "set_working_directory" in steps and str(REPO) in steps
