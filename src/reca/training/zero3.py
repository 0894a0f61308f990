"""Loading a model for ZeRO-3 so that no rank ever holds it whole.

With a stage-3 DeepSpeed config registered, transformers builds every model
that ``from_pretrained`` loads inside ``deepspeed.zero.Init`` (its DeepSpeed
integration): each parameter is partitioned across the ranks as soon as its
module is constructed, rank 0 reads the checkpoint (memory-mapped
safetensors, file by file) and each layer is gathered, filled and
re-partitioned in turn. A 7B model therefore never exists in full on any rank.

Frozen parts (understanding encoder, VQ / VAE) are then taken back out of the
partitioning: they have no optimizer state to shard, and they are called
outside the engine (embedding cache, sampling, the cache key's fingerprint),
where no gather hooks run (see
:class:`reca.training.deepspeed_setup.FrozenOutsideZero3`). Each rank holds
them whole, in the compute dtype, on its own device.

Parts built by diffusers (a DiT, MAR's modules) have no such integration: they
load whole on every rank and are partitioned by ``deepspeed.initialize``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn


def zero_stage(ds_config: dict[str, Any]) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


@contextlib.contextmanager
def partitioned_loading(ds_config: dict[str, Any]) -> Iterator[None]:
    """Inside the block, transformers models load straight into ZeRO-3 partitions (stage 3 only).

    The process group must already exist: ``zero.Init`` partitions over it.
    """
    if zero_stage(ds_config) != 3:
        yield
        return
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    # transformers keeps only a weak reference to this object: it must stay alive for the block.
    registered = HfDeepSpeedConfig(ds_config)
    try:
        yield
    finally:
        # Later loads in this process (an export reloaded for evaluation) must not be partitioned.
        unset_hf_deepspeed_config()
        del registered


def is_partitioned(p: torch.Tensor) -> bool:
    """True for a parameter that ZeRO-3 has partitioned (its ``data`` is an empty placeholder)."""
    return hasattr(p, "ds_id")


def full_numel(p: torch.Tensor) -> int:
    """Elements of the whole parameter, partitioned or not."""
    return int(p.ds_numel) if is_partitioned(p) else p.numel()


def full_ndim(p: torch.Tensor) -> int:
    """Dimensions of the whole parameter (a partition's placeholder is 1-D)."""
    return len(p.ds_shape) if is_partitioned(p) else p.ndim


def unpartition(modules: Iterable[nn.Module]) -> int:
    """Give each module back ordinary, whole parameters in place of ZeRO-3 partitions; return how many.

    Every rank gathers each parameter once and keeps a private copy. Tied
    parameters stay tied (one copy for each shared partitioned parameter).
    """
    copies: dict[int, nn.Parameter] = {}
    for module in modules:
        for sub in module.modules():
            for name, p in list(sub._parameters.items()):  # noqa: SLF001 - replacing parameters in place
                if p is None or not is_partitioned(p):
                    continue
                if id(p) not in copies:
                    import deepspeed

                    with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                        whole = p.data.detach().clone()
                    copies[id(p)] = nn.Parameter(whole, requires_grad=p.requires_grad)
                sub._parameters[name] = copies[id(p)]  # noqa: SLF001
    return len(copies)


def place_frozen(modules: Iterable[nn.Module], *, dtype: torch.dtype | None, device: torch.device | str) -> None:
    """Cast a frozen module's floating-point weights to ``dtype`` (the engine's) and move it to ``device``."""
    for module in modules:
        module.to(device=device)
        if dtype is not None:
            module.to(dtype=dtype)
