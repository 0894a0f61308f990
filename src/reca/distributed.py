"""Process-group set-up for DeepSpeed on CPU (gloo) or GPU (nccl).

A single ``reca train`` with no launcher is a world of one: the environment
variables a launcher would set are filled in so the same code path (and the
real DeepSpeed engine) runs on a laptop, under ``torchrun``, or under the
``deepspeed`` launcher on many nodes.

A leaf of the package: the trainer sets the process group up, and tracking
asks :func:`is_rank_zero` so that only rank 0 logs, without either importing
the other.
"""

from __future__ import annotations

import os

import torch


def accelerator() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``; exported for DeepSpeed before it is imported."""
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    os.environ.setdefault("DS_ACCELERATOR", kind)
    return os.environ["DS_ACCELERATOR"]


def started_by_launcher() -> bool:
    """Whether a launcher (torchrun, deepspeed, a scheduler) set up a rendezvous for this process.

    A world of one fills in ``RANK``/``LOCAL_RANK``/``WORLD_SIZE=1`` itself (see
    :func:`init_distributed`) and leaves ``MASTER_PORT`` unset, so those variables
    alone do not count: a later stage in the same process is not a launched worker.
    """
    return "MASTER_PORT" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed() -> tuple[int, int]:
    """Initialise the default process group once; return ``(rank, world_size)``."""
    kind = accelerator()
    import deepspeed  # after DS_ACCELERATOR is set: it picks its accelerator at import

    backend = "gloo" if kind == "cpu" else "nccl"
    if not torch.distributed.is_initialized():
        if not started_by_launcher():
            # A world of one needs no rendezvous. A TCP store on a "free" port can
            # meet another job's store that took the port meanwhile and wait forever.
            for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
                os.environ.setdefault(key, value)
            torch.distributed.init_process_group(backend, store=torch.distributed.HashStore(), rank=0, world_size=1)
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def is_rank_zero() -> bool:
    """True on the process that logs and writes shared outputs."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
