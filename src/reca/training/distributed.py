"""Process-group set-up for DeepSpeed on CPU (gloo) or GPU (nccl).

A single ``reca train`` with no launcher is a world of one: the environment
variables a launcher would set are filled in so the same code path (and the
real DeepSpeed engine) runs on a laptop, under ``torchrun``, or under the
``deepspeed`` launcher on many nodes.
"""

from __future__ import annotations

import os
import socket

import torch


def accelerator() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``; exported for DeepSpeed before it is imported."""
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    os.environ.setdefault("DS_ACCELERATOR", kind)
    return os.environ["DS_ACCELERATOR"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed() -> tuple[int, int]:
    """Initialise the default process group once; return ``(rank, world_size)``."""
    kind = accelerator()
    import deepspeed  # after DS_ACCELERATOR is set: it picks its accelerator at import

    if not torch.distributed.is_initialized():
        defaults = {
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()),
        }
        for key, value in defaults.items():
            os.environ.setdefault(key, value)
        deepspeed.init_distributed(dist_backend="gloo" if kind == "cpu" else "nccl", auto_mpi_discovery=False,
                                   verbose=False)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def is_rank_zero() -> bool:
    """True on the process that logs and writes shared outputs."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
