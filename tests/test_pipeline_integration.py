"""End to end: `dvc repro` of a shrunken default in a temporary copy of the repository.

Runs the real commands a user runs (dvc pull from the in-repo remote, dvc
repro, the Prefect flow), then checks what they leave behind: DVC metrics,
MLflow runs with params, curves and artifacts, resumable checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ["curate", "degrade", "sft", "embed", "train", "post_sft", "evaluate"]


def _env(root: Path) -> dict[str, str]:
    # Tests that trained in-process left a world-of-one's RANK/WORLD_SIZE behind: not a launched worker here.
    launcher_vars = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_TRACKING", "RECA_")) and k not in launcher_vars}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@localhost",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@localhost",
        "PREFECT_HOME": str(root / ".prefect"),
    })
    return env


def _run(cmd: list[str], root: Path, timeout: int = 400) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out


def _shrink(params_path: Path) -> None:
    p = yaml.safe_load(params_path.read_text())
    p["sft"].update(steps=6, warmup_steps=1, checkpoint_every=3, log_every=2, batch_size=8)  # when enabled
    p["train"].update(steps=4, warmup_steps=1, checkpoint_every=2, log_every=2, batch_size=8)
    p["evaluate"].update(prompts_per_task=2, samples_per_prompt=1, n_reconstruction=4, batch_size=8, grid_size=4)
    params_path.write_text(yaml.safe_dump(p, sort_keys=False))


@pytest.fixture(scope="module")
def pipeline_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in listed:
        src = REPO / rel
        if src.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    _shrink(root / "params.yaml")
    _run(["git", "init", "-q"], root)
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-qm", "copy"], root)
    # as `make run` does: the data and the published starting model from the in-repo remote
    _run([str(BIN / "dvc"), "pull", "-q", "data.dvc", "start_model"], root)
    # then a smaller world from the same generator, so curate and degrade stay quick (the published
    # model knows its words): what a user does with their own images
    shutil.rmtree(root / "data" / "raw")
    _run([str(BIN / "reca"), "make-world", "--out", "data/raw", "--seed", "1", "--captioned", "48",
          "--unlabeled", "48", "--heldout", "8"], root)
    _run([str(BIN / "dvc"), "add", "-q", "data/raw"], root)
    _run([str(BIN / "dvc"), "repro"], root, timeout=600)
    return root


def _mlflow_runs(root: Path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("reca")
    return client, client.search_runs([exp.experiment_id], max_results=200)


def test_dvc_repro_writes_side_by_side_metrics(pipeline_copy):
    metrics = json.loads((pipeline_copy / "metrics" / "metrics.json").read_text())
    for model in ("sft", "reca"):
        assert {"recon_psnr", "recon_ssim", "overall", "single_object", "colors"} <= set(metrics[model])
        assert 0.0 <= metrics[model]["overall"] <= 1.0
        assert metrics[model]["recon_psnr"] > 0
    assert "delta" in metrics
    shown = _run([str(BIN / "dvc"), "metrics", "show", "--json"], pipeline_copy).stdout
    assert "recon_psnr" in shown
    status = _run([str(BIN / "dvc"), "status"], pipeline_copy).stdout
    assert "up to date" in status
    for grid in ("samples.png", "prompts.png", "reconstructions.png"):
        assert (pipeline_copy / "reports" / "evaluate" / grid).stat().st_size > 0


def test_every_stage_is_an_mlflow_run_with_params_and_artifacts(pipeline_copy):
    client, runs = _mlflow_runs(pipeline_copy)
    by_stage = {r.data.tags.get("reca.stage"): r for r in runs}
    assert set(STAGES) <= set(by_stage)
    for stage in STAGES:
        run = by_stage[stage]
        assert run.info.status == "FINISHED"
        assert run.data.tags["git.commit"] != "unknown"
        assert run.data.params, f"{stage} logged no params"
    train = by_stage["train"]
    assert train.data.params["train.lambda_reca"] == "0.5"
    assert train.data.params["train.h_v_source"] == "cache"
    history = client.get_metric_history(train.info.run_id, "loss_reca")
    assert [m.step for m in history] == [2, 4]
    artifacts = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert {"model", "params.yaml"} <= artifacts
    evaluate = {a.path for a in client.list_artifacts(by_stage["evaluate"].info.run_id, "report")}
    assert "report/samples.png" in evaluate
    # The final model is registered, and evaluate tagged that version with its scores.
    name, version = train.data.tags["reca.registered_model"].split("/")
    tags = client.get_model_version(name, version).tags
    assert "eval.overall" in tags and "eval.recon_psnr" in tags


def test_train_resumes_from_its_checkpoint_after_outputs_are_deleted(pipeline_copy):
    ckpts = list((pipeline_copy / "checkpoints" / "train").glob("*/latest"))
    assert len(ckpts) == 1 and ckpts[0].read_text().strip() == "step0000004"
    _run([str(BIN / "dvc"), "repro", "-f", "-s", "train"], pipeline_copy)
    client, runs = _mlflow_runs(pipeline_copy)
    latest = max((r for r in runs if r.data.tags.get("reca.stage") == "train"), key=lambda r: r.info.start_time)
    assert latest.data.tags.get("reca.resumed_from_step") == "4"
    from reca.models import registry

    assert registry.load(pipeline_copy / "models" / "reca").name == "janus_ar"


def test_prefect_flow_runs_the_dvc_targets_without_a_server(pipeline_copy):
    out = _run([sys.executable, "flows/reca_pipeline.py"], pipeline_copy, timeout=300)
    assert "recon_psnr" in out.stdout
    _, runs = _mlflow_runs(pipeline_copy)
    parents = [r for r in runs if r.data.tags.get("reca.kind") == "pipeline"
               and r.data.tags.get("reca.launcher") == "prefect"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def test_train_relaunches_itself_across_two_processes(pipeline_copy):
    params = pipeline_copy / "params.yaml"
    p = yaml.safe_load(params.read_text())
    p["train"].update(processes=2, zero_stage=2)
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    out = _run([str(BIN / "dvc"), "repro", "-s", "train"], pipeline_copy, timeout=600)
    assert "torch.distributed.run" in out.stdout + out.stderr
    client, runs = _mlflow_runs(pipeline_copy)
    latest = max((r for r in runs if r.data.tags.get("reca.stage") == "train"), key=lambda r: r.info.start_time)
    assert latest.info.status == "FINISHED"
    assert latest.data.params["deepspeed.world_size"] == "2"
    assert [m.step for m in client.get_metric_history(latest.info.run_id, "loss_reca")] == [2, 4]
    assert (pipeline_copy / "models" / "reca" / "model.safetensors").exists()


@pytest.mark.slow
def test_condition_and_order_ablations_run_as_dvc_experiments(pipeline_copy):
    # The mechanism of scripts/ablations.sh's cond-vae-latents and order-reca-sft, on the shrunken default.
    experiments = {
        "cond-vae-latents": ["-S", "train.condition=generation_latents"],
        "order-reca-sft": ["-S", "post_sft.steps=2", "-S", "post_sft.warmup_steps=1",
                           "-S", "post_sft.checkpoint_every=2"],
    }
    for name, overrides in experiments.items():
        _run([str(BIN / "dvc"), "exp", "run", "--temp", "-n", name, *overrides], pipeline_copy, timeout=900)
    shown = json.loads(_run([str(BIN / "dvc"), "exp", "show", "--json"], pipeline_copy).stdout)
    text = json.dumps(shown)
    for name in experiments:
        assert f'"{name}"' in text
    assert "generation_latents" in text and "reca" in text
    client, runs = _mlflow_runs(pipeline_copy)
    by_exp = {}
    for run in runs:
        by_exp.setdefault(run.data.tags.get("dvc.exp_name"), []).append(run)
    # only post_sft's params changed: sft and train come from DVC's run cache, post_sft and evaluate run
    stages = {r.data.tags.get("reca.stage") for r in by_exp["order-reca-sft"]}
    assert {"post_sft", "evaluate"} <= stages
    post = next(r for r in by_exp["order-reca-sft"] if r.data.tags.get("reca.stage") == "post_sft")
    assert post.data.params["post_sft.steps"] == "2"
    train = next(r for r in by_exp["cond-vae-latents"] if r.data.tags.get("reca.stage") == "train")
    assert train.data.params["train.condition"] == "generation_latents"
