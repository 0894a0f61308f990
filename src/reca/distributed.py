"""Process-group set-up for DeepSpeed on CPU (gloo) or GPU (nccl).

A single ``reca train`` with no launcher is a world of one: the environment
variables a launcher would set are filled in so the same code path (and the
real DeepSpeed engine) runs on a laptop, under ``torchrun``, or under the
``deepspeed`` launcher on many nodes.

Stages that only split work and need no DeepSpeed engine (`embed`,
`evaluate`) join the same launcher's workers through :func:`join_workers`:
each rank takes its :meth:`Workers.share` of the work on its own accelerator
(:func:`process_device`), and rank 0 merges.

A leaf of the package: the trainer sets the process group up, and tracking
asks :func:`is_rank_zero` so that only rank 0 logs, without either importing
the other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

T = TypeVar("T")


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


def process_device() -> torch.device:
    """This process's accelerator: ``cuda:<LOCAL_RANK>`` when a GPU is visible, else the CPU.

    ``DS_ACCELERATOR=cpu`` keeps a GPU machine on the CPU. The GPU is also made
    the current device, which NCCL's collectives (object gathers included) use.
    """
    if accelerator() != "cuda" or not torch.cuda.is_available():
        return torch.device("cpu")
    # More processes than GPUs share the GPUs round-robin (a small model leaves room for several).
    index = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


@dataclass(frozen=True)
class Workers:
    """This process's place among the launched workers of a stage that splits its work.

    Work is a list of items (embedding shards, evaluation batches) numbered the
    same way on every rank; rank ``r`` of ``n`` takes items ``r, r + n, ...``,
    so each item is done by exactly one rank, exactly as one process would do
    it, and rank 0 puts the pieces back in item order.
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """True on rank 0, which merges and writes the shared outputs."""
        return self.rank == 0

    def share(self, count: int) -> range:
        """Indices of the items, out of ``count``, that this rank does (round-robin)."""
        return range(self.rank, count, self.world_size)

    def gather(self, mine: dict[int, T]) -> list[T] | None:
        """Every rank's ``{item index: result}`` merged in item order, on rank 0 (``None`` on the others)."""
        parts = [mine]
        if self.world_size > 1:
            parts = [{} for _ in range(self.world_size)] if self.is_main else None
            torch.distributed.gather_object(mine, parts, dst=0)
        if not self.is_main:
            return None
        merged: dict[int, Any] = {}
        for part in parts:
            merged.update(part)
        return [merged[i] for i in sorted(merged)]

    def barrier(self) -> None:
        """Wait for every rank (a no-op in a world of one)."""
        if self.world_size > 1:
            torch.distributed.barrier()


def join_workers() -> Workers:
    """This process's :class:`Workers`, joining the launcher's process group (no DeepSpeed) when launched.

    A process no launcher started is a world of one and needs no group; one
    that already has a group (the trainer's) keeps it.
    """
    device = process_device()
    dist = torch.distributed
    if dist.is_available() and not dist.is_initialized() and started_by_launcher():
        # torchrun and the deepspeed launcher set MASTER_ADDR/PORT, RANK and WORLD_SIZE (env://).
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_available() and dist.is_initialized():
        return Workers(dist.get_rank(), dist.get_world_size(), device)
    return Workers(device=device)
