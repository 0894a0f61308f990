"""Prefect flow that runs the reca DVC pipeline, stage by stage.

DVC owns the dependency graph; this flow never restates it. It pulls the
DVC-tracked raw data, asks DVC for the stage names (``dvc stage list``), then
calls ``dvc repro <stage>`` for each in turn, so Prefect contributes retries,
logs, scheduling and notifications while ``dvc repro`` alone still decides
what is stale. Data steps (the pull and the data stages ``curate``,
``degrade``, ``embed``) are retried with exponential back-off: they fail for
passing reasons (a remote that times out, a full scratch disk). Training
stages are not retried by default: their failures (out of memory, a NaN) come
back on a retry, and a killed run resumes from its checkpoint when rerun.

One MLflow parent run covers the flow run (tagged with the Prefect flow run
id and deployment); every stage's run becomes its child through
``RECA_PARENT_RUN_ID``, passed to each ``dvc repro`` in its environment.

Run once, with no Prefect server:

    python flows/reca_pipeline.py                # every stage
    python flows/reca_pipeline.py --target train # one target and what it needs

On a schedule, against a Prefect server: ``flows/deploy.py`` (or ``prefect.yaml``).
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
# The ephemeral server builds its database on first use (about 17 s on 2 idle cores); the
# default 20 s start-up timeout fails on a busy machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DVC_SITE_CACHE_DIR", str(REPO / ".cache" / "dvc-site"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))

from prefect import flow, get_run_logger, task  # noqa: E402 - after the environment is set

BIN = Path(sys.executable).parent
#: stages that move and transform data; their failures are usually transient
DATA_STAGES = ("curate", "degrade", "embed")


def _dvc(*args: str, repo: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    return subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=full_env, capture_output=True, text=True)


def _tail(out: subprocess.CompletedProcess[str], lines: int = 15) -> str:
    return "\n".join((out.stdout + out.stderr).splitlines()[-lines:])


def dvc_stages(repo: Path) -> list[str]:
    """Stage names in ``dvc.yaml`` order, as DVC reports them."""
    out = _dvc("stage", "list", "--name-only", repo=repo)
    if out.returncode != 0:
        raise RuntimeError(f"dvc stage list failed in {repo}:\n{out.stderr}")
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def retry_options(retries: int, first_delay: float) -> dict:
    """Prefect task options: ``retries`` retries, waiting ``first_delay`` seconds then doubling."""
    return {"retries": retries, "retry_delay_seconds": [first_delay * 2**i for i in range(retries)]}


def pull_targets(repo: str | Path) -> list[str]:
    """The ``*.dvc`` files at the repository root (not the ``.dvc/`` directory), sorted."""
    return sorted(p.name for p in Path(repo).glob("?*.dvc") if p.is_file())


@task(name="dvc-pull")
def pull(repo: str) -> list[str]:
    """``dvc pull`` every ``*.dvc`` file at the repository root (the raw data); returns their names."""
    logger = get_run_logger()
    targets = pull_targets(repo)
    if not targets:
        logger.info("no *.dvc files in %s: nothing to pull", repo)
        return []
    out = _dvc("pull", *targets, repo=Path(repo))
    if out.returncode != 0:
        raise RuntimeError(f"dvc pull {' '.join(targets)} failed (exit {out.returncode}):\n{_tail(out)}")
    logger.info(_tail(out))
    return targets


@task(name="dvc-repro")
def repro(target: str, repo: str, parent_run_id: str) -> str:
    """``dvc repro <target>`` with the flow's MLflow parent run; failure raises with DVC's own message."""
    from reca.tracking.mlflow_run import PARENT_ENV

    logger = get_run_logger()
    logger.info("dvc repro %s", target)
    out = _dvc("repro", target, repo=Path(repo), env={PARENT_ENV: parent_run_id})
    if out.returncode != 0:
        raise RuntimeError(f"dvc repro {target} failed (exit {out.returncode}):\n{_tail(out)}")
    logger.info(_tail(out))
    return target


def _prefect_tags() -> dict[str, str]:
    from prefect.runtime import deployment, flow_run

    tags = {"prefect.flow_run_id": str(flow_run.id or ""), "prefect.flow_run_name": str(flow_run.name or "")}
    if deployment.name:
        tags["prefect.deployment"] = str(deployment.name)
    return tags


@flow(name="reca-pipeline", log_prints=True)
def reca_pipeline(
    targets: list[str] | None = None,
    repo: str = str(REPO),
    pull_data: bool = True,
    data_stages: list[str] | None = None,
    data_retries: int = 2,
    stage_retries: int = 0,
    retry_delay_seconds: float = 30.0,
) -> dict:
    """Reproduce ``targets`` (default: every stage) and return ``dvc metrics show`` as a dict.

    Args:
        targets: ``dvc.yaml`` stages to reproduce in order (default: all, as ``dvc stage list`` gives them).
        repo: Repository root to run in.
        pull_data: ``dvc pull`` the root ``*.dvc`` files first.
        data_stages: Stages retried as data steps (default: curate, degrade, embed).
        data_retries: Retries of the pull and of each data stage.
        stage_retries: Retries of every other stage.
        retry_delay_seconds: Delay before the first retry; it doubles on each later one.
    """
    from reca.tracking.mlflow_run import pipeline_run

    repo_path = Path(repo)
    data = set(DATA_STAGES if data_stages is None else data_stages)
    tags = _prefect_tags()
    with pipeline_run(f"prefect {tags['prefect.flow_run_name']}".strip(), root=repo_path, tags=tags) as parent_id:
        if pull_data:
            pull.with_options(**retry_options(data_retries, retry_delay_seconds))(repo)
        for target in targets or dvc_stages(repo_path):
            retries = data_retries if target in data else stage_retries
            repro.with_options(**retry_options(retries, retry_delay_seconds))(target, repo, parent_id)
    shown = _dvc("metrics", "show", "--json", repo=repo_path)
    return json.loads(shown.stdout) if shown.returncode == 0 and shown.stdout.strip() else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the reca DVC pipeline once as a Prefect flow "
                                     "(no server needed; flows/deploy.py schedules it).")
    parser.add_argument("--target", action="append", help="a dvc.yaml stage (repeatable; default: all stages)")
    parser.add_argument("--repo", default=str(REPO), help="repository root (default: this checkout)")
    parser.add_argument("--no-pull", action="store_true", help="do not `dvc pull` the raw data first")
    parser.add_argument("--data-retries", type=int, default=2, help="retries of the pull and each data stage "
                        "(default: 2)")
    parser.add_argument("--retry-delay", type=float, default=30.0, help="seconds before the first retry, doubling "
                        "after (default: 30)")
    args = parser.parse_args(argv)
    metrics = reca_pipeline(targets=args.target, repo=args.repo, pull_data=not args.no_pull,
                            data_retries=args.data_retries, retry_delay_seconds=args.retry_delay)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
