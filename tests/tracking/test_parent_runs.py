"""How a stage run finds its parent: explicit id, pipeline key, enclosing dvc process, or none."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from reca.tracking.mlflow_run import stage_run
from reca.tracking.model_lineage import stage_runs
from reca_fixtures.tracking import isolated_mlflow_store


@pytest.fixture
def store(tmp_path, monkeypatch):
    client, _ = isolated_mlflow_store(tmp_path, monkeypatch)
    (tmp_path / "params.yaml").write_text("train:\n  lr: 0.1\n")
    monkeypatch.chdir(tmp_path)
    return client


def _parent_id(client, run_id):
    return client.get_run(run_id).data.tags.get("mlflow.parentRunId")


def test_stages_with_one_pipeline_key_share_a_parent_that_fails_with_a_stage(store, monkeypatch):
    monkeypatch.setenv("RECA_PIPELINE_KEY", "job-42")
    with stage_run("embed") as first:
        first.log_metrics({"images": 3})
    parent_id = _parent_id(store, first.run_id)
    assert store.get_run(parent_id).info.status == "FINISHED"
    with pytest.raises(RuntimeError), stage_run("train") as second:
        assert store.get_run(parent_id).info.status == "RUNNING"
        second.log_metrics({"loss": 0.5})
        raise RuntimeError("out of memory")
    assert _parent_id(store, second.run_id) == parent_id
    parent = store.get_run(parent_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["reca.pipeline_key"] == "job-42" and parent.data.tags["reca.launcher"] == "env"
    assert parent.data.metrics == {"embed.images": 3.0, "train.loss": 0.5}
    assert [r.info.status for r in stage_runs(store, parent_id)] == ["FINISHED", "FAILED"]


def test_an_explicit_parent_is_used_and_its_status_left_to_its_owner(store, monkeypatch):
    experiment = store.get_experiment_by_name("reca") or store.get_experiment(store.create_experiment("reca"))
    parent_id = store.create_run(experiment.experiment_id, run_name="flow").info.run_id
    monkeypatch.setenv("RECA_PARENT_RUN_ID", parent_id)
    monkeypatch.setenv("RECA_PIPELINE_KEY", "ignored-when-a-parent-is-given")
    with stage_run("curate") as child:
        child.log_metrics({"kept": 7})
    assert _parent_id(store, child.run_id) == parent_id
    parent = store.get_run(parent_id)
    assert parent.info.status == "RUNNING"
    assert parent.data.metrics == {"curate.kept": 7.0}


def test_a_stage_run_by_hand_has_no_parent(store):
    with stage_run("evaluate") as run:
        pass
    assert _parent_id(store, run.run_id) is None
    assert store.get_run(run.run_id).data.tags["git.dirty"] in ("true", "false")


def test_the_enclosing_dvc_invocation_keys_the_pipeline(tmp_path):
    # A stand-in `dvc` that runs two "stages", each printing the key it derives.
    fake = tmp_path / "bin" / "dvc"
    fake.parent.mkdir()
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import os, subprocess, sys
        probe = "from reca.tracking.pipeline_runs import pipeline_key; print(pipeline_key())"
        for _ in range(2):
            subprocess.run(["/bin/sh", "-c", f"{{sys.executable}} -c '{{probe}}'"], check=True)
        print("pid", os.getpid())
        """))
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "RECA_PIPELINE_KEY"}

    def invoke():
        out = subprocess.run([str(fake)], capture_output=True, text=True, check=True, env=env).stdout.splitlines()
        return out[:2], out[2].split()[1]

    (key_a, key_b), pid = invoke()
    assert key_a == key_b and f":{pid}:" in key_a and "'dvc'" in key_a
    (key_c, _), _ = invoke()
    assert key_c != key_a


def test_dvc_command_lines_are_recognised_and_others_are_not():
    from reca.tracking.pipeline_runs import is_dvc_command

    for cmdline in (["dvc", "repro"], ["/srv/venv/bin/python3", "/srv/venv/bin/dvc", "exp", "run"],
                    ["python3.11", "-m", "dvc", "exp", "exec-run", "--infofile", "x"]):
        assert is_dvc_command(cmdline), cmdline
    for cmdline in (["make", "dvc"], ["python", "train.py", "dvc"], ["/bin/sh", "-c", "dvc repro"], []):
        assert not is_dvc_command(cmdline), cmdline
