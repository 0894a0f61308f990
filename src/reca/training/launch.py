"""Relaunching `reca sft` / `reca train` / `reca embed` / `reca evaluate` across processes and nodes.

When a stage's params ask for more than one process (``processes``) or give a
``hostfile``, the command the user (or DVC) ran becomes a launcher: it
re-executes the same ``reca <stage> ...`` command under ``torchrun`` (one
node) or the ``deepspeed`` launcher (one or many nodes, hostfile), then waits.
The launched workers see ``RANK``/``WORLD_SIZE`` and train (or each take
their share of the stage's work); they never launch again. The launcher owns the MLflow run and hands its id to the workers
through the environment, so rank 0 logs into it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from reca.distributed import started_by_launcher
from reca.params import LaunchParams
from reca.tracking.mlflow_run import STAGE_RUN_ENV

WORKER_ENV = "RECA_LAUNCHED"


class LaunchError(RuntimeError):
    """The launched worker processes failed."""



def inside_launched_worker() -> bool:
    """True in a process started by a launcher (ours, torchrun, deepspeed, or a scheduler)."""
    return os.environ.get(WORKER_ENV) == "1" or started_by_launcher()


def needs_launch(optim: LaunchParams) -> bool:
    """Whether this invocation must relaunch itself across processes."""
    return (optim.processes > 1 or optim.hostfile is not None) and not inside_launched_worker()


def _executable(name: str) -> str:
    # Prefer the launcher next to this interpreter (the project's venv), then PATH.
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"`{name}` launcher not found next to {sys.executable} or on PATH")
    return found


def launch_command(optim: LaunchParams, stage_argv: Sequence[str], *, master_port: int | None = None) -> list[str]:
    """The command that runs ``reca <stage_argv>`` under the configured launcher."""
    if optim.launcher == "torchrun":
        rendezvous = (["--standalone"] if master_port is None
                      else ["--master_addr=127.0.0.1", f"--master_port={master_port}"])
        return [sys.executable, "-m", "torch.distributed.run", *rendezvous,
                f"--nproc_per_node={optim.processes}", "-m", "reca.cli", *stage_argv]
    cmd = [_executable("deepspeed")]
    if optim.hostfile is not None:
        if not Path(optim.hostfile).exists():
            raise FileNotFoundError(f"{optim.hostfile}: hostfile not found (see configs/hostfile.example)")
        cmd += ["--hostfile", optim.hostfile]
    else:
        cmd += ["--num_gpus", str(optim.processes)]
    if master_port is not None:
        cmd += ["--master_port", str(master_port)]
    # --no_local_rank: our entry point reads LOCAL_RANK from the environment, not argv.
    return [*cmd, "--no_local_rank", "--module", "reca.cli", *stage_argv]


def worker_environment(run_id: str | None) -> dict[str, str]:
    """Environment for the launched workers: marked as workers, with the MLflow run to log into."""
    env = dict(os.environ)
    env[WORKER_ENV] = "1"
    if run_id:
        env[STAGE_RUN_ENV] = run_id
    return env
