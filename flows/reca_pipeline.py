"""Prefect flow that runs the reca DVC pipeline, stage by stage.

DVC owns the dependency graph; this flow never restates it. It asks DVC for
the stage names (``dvc stage list``), then calls ``dvc repro <stage>`` for
each in turn, so Prefect contributes retries, logs, scheduling and
notifications while ``dvc repro`` alone still decides what is stale. One
MLflow parent run covers the flow run; every stage's run becomes its child
through ``RECA_PARENT_RUN_ID``.

Run once, with no Prefect server:

    python flows/reca_pipeline.py                # every stage
    python flows/reca_pipeline.py --target train # one target and what it needs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Keep Prefect's state and the tools' caches inside the repository, and quiet.
os.environ.setdefault("PREFECT_HOME", str(REPO / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DVC_SITE_CACHE_DIR", str(REPO / ".cache" / "dvc-site"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))

from prefect import flow, get_run_logger, task  # noqa: E402 - after the environment is set

BIN = Path(sys.executable).parent


def _dvc(*args: str, repo: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True)


def dvc_stages(repo: Path) -> list[str]:
    """Stage names in ``dvc.yaml`` order, as DVC reports them."""
    out = _dvc("stage", "list", "--name-only", repo=repo)
    if out.returncode != 0:
        raise RuntimeError(f"dvc stage list failed in {repo}:\n{out.stderr}")
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


@task(name="dvc-repro", retries=1, retry_delay_seconds=5)
def repro(target: str, repo: str) -> str:
    """``dvc repro <target>``; failure raises with DVC's own message."""
    logger = get_run_logger()
    logger.info("dvc repro %s", target)
    out = _dvc("repro", target, repo=Path(repo))
    tail = "\n".join((out.stdout + out.stderr).splitlines()[-15:])
    if out.returncode != 0:
        raise RuntimeError(f"dvc repro {target} failed (exit {out.returncode}):\n{tail}")
    logger.info(tail)
    return target


@flow(name="reca-pipeline", log_prints=True)
def reca_pipeline(targets: list[str] | None = None, repo: str = str(REPO)) -> dict:
    """Reproduce ``targets`` (default: every stage) and return ``dvc metrics show`` as a dict."""
    from reca.tracking.mlflow_run import PARENT_ENV, pipeline_run

    repo_path = Path(repo)
    with pipeline_run("pipeline", root=repo_path) as parent_id:
        os.environ[PARENT_ENV] = parent_id
        try:
            for target in targets or dvc_stages(repo_path):
                repro(target, repo)
        finally:
            os.environ.pop(PARENT_ENV, None)
    shown = _dvc("metrics", "show", "--json", repo=repo_path)
    return json.loads(shown.stdout) if shown.returncode == 0 and shown.stdout.strip() else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the reca DVC pipeline as a Prefect flow (no server needed).")
    parser.add_argument("--target", action="append", help="a dvc.yaml stage (repeatable; default: all stages)")
    parser.add_argument("--repo", default=str(REPO), help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    metrics = reca_pipeline(targets=args.target, repo=args.repo)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
