"""Schedule the reca pipeline: serve the flow as a cron deployment against a Prefect server.

Schedules need a real Prefect server (ephemeral mode runs flows but never
creates scheduled runs). With the repository's Makefile:

    make prefect-server    # terminal 1: Prefect server on http://127.0.0.1:4200
    make prefect-deploy    # terminal 2: this script; serves `reca-pipeline/nightly`

or by hand, with ``PREFECT_API_URL=http://127.0.0.1:4200/api`` exported:

    python flows/deploy.py --cron "0 3 * * *"           # every night at 03:00 (UTC)
    prefect deployment run reca-pipeline/nightly        # a manual run, any time

This process is the worker: it polls the server and runs each scheduled or
manual run of the deployment in a subprocess, until Ctrl-C (which pauses the
schedule). ``prefect.yaml`` declares the same deployment for ``prefect
deploy`` with a process work pool, for a team that runs workers instead.
"""

from __future__ import annotations

import argparse
import sys

from reca_pipeline import DATA_STAGES, REPO, reca_pipeline

DEFAULT_CRON = "0 3 * * *"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Serve the reca pipeline flow as a scheduled Prefect deployment (needs a Prefect server: "
        "`make prefect-server`, then PREFECT_API_URL=http://127.0.0.1:4200/api).")
    parser.add_argument("--name", default="nightly", help="deployment name (default: nightly); runs as "
                        "reca-pipeline/<name>")
    parser.add_argument("--cron", default=DEFAULT_CRON, help=f"cron schedule, UTC (default: {DEFAULT_CRON!r})")
    parser.add_argument("--paused", action="store_true", help="register the schedule paused (manual runs only)")
    parser.add_argument("--target", action="append", help="a dvc.yaml stage (repeatable; default: all stages)")
    parser.add_argument("--repo", default=str(REPO), help="repository root the runs work in (default: this "
                        "checkout)")
    parser.add_argument("--no-pull", action="store_true", help="do not `dvc pull` the raw data first")
    parser.add_argument("--data-retries", type=int, default=2, help="retries of the pull and of each data stage "
                        f"({', '.join(DATA_STAGES)}; default: 2)")
    parser.add_argument("--stage-retries", type=int, default=0, help="retries of every other stage (default: 0)")
    parser.add_argument("--retry-delay", type=float, default=30.0, help="seconds before the first retry, doubling "
                        "after (default: 30)")
    return parser


def deployment_parameters(args: argparse.Namespace) -> dict:
    """Flow parameters the deployment's runs get."""
    return {"targets": args.target, "repo": args.repo, "pull_data": not args.no_pull,
            "data_retries": args.data_retries, "stage_retries": args.stage_retries,
            "retry_delay_seconds": args.retry_delay}


def api_url() -> str | None:
    """The Prefect API this process talks to (environment or profile), if any."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not api_url():
        print("flows/deploy.py: error: no Prefect server configured. Start one with `make prefect-server` and "
              "export PREFECT_API_URL=http://127.0.0.1:4200/api (schedules do not run in ephemeral mode).",
              file=sys.stderr)
        return 2
    reca_pipeline.serve(
        name=args.name,
        cron=args.cron,
        paused=args.paused,
        parameters=deployment_parameters(args),
        tags=["reca"],
        description="Reproduce the reca DVC pipeline (dvc repro per stage) and log it to MLflow.",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
