"""DeepSpeed configuration and the ZeRO-3 treatment of frozen modules.

The ZeRO-stage-specific settings live in JSON files (``configs/deepspeed/
zero<N>.json`` by default); everything that follows from ``params.yaml``
(batch sizes, accumulation, clipping, schedule, precision) is filled in here so
the two can never disagree.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from reca.params import OptimParams

CONFIG_DIR = Path("configs") / "deepspeed"


def config_path(optim: OptimParams, root: str | Path = ".") -> Path:
    """The JSON this run starts from: ``deepspeed_config`` or ``configs/deepspeed/zero<N>.json``."""
    path = Path(optim.deepspeed_config) if optim.deepspeed_config else Path(root) / CONFIG_DIR / f"zero{optim.zero_stage}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: DeepSpeed config not found; run from the repository root or set deepspeed_config"
        )
    return path


def resolve_precision(optim: OptimParams, *, on_cpu: bool) -> str:
    """``bf16`` on GPU and ``fp32`` on CPU unless params pin one."""
    if optim.precision != "auto":
        return optim.precision
    return "fp32" if on_cpu else "bf16"


def build_config(optim: OptimParams, *, on_cpu: bool, world_size: int, root: str | Path = ".") -> dict[str, Any]:
    """The full DeepSpeed config for one run (also logged to MLflow)."""
    path = config_path(optim, root)
    config = json.loads(path.read_text())
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage != optim.zero_stage:
        raise ValueError(f"{path} sets ZeRO stage {stage} but params say zero_stage: {optim.zero_stage}")
    # DeepSpeed's linear warm-up starts at its minimum: a minimum of 0 would make
    # the first optimiser step a no-op, so warm up from lr / warmup_steps instead.
    first = 1.0 / optim.warmup_steps
    warmup = {"warmup_num_steps": optim.warmup_steps, "warmup_type": "linear", "warmup_min_ratio": first}
    if optim.lr_schedule == "cosine":
        scheduler = {"type": "WarmupCosineLR",
                     "params": {"total_num_steps": optim.steps, "cos_min_ratio": optim.min_lr_ratio, **warmup}}
    else:
        scheduler = {"type": "WarmupLR",
                     "params": {"warmup_min_lr": optim.lr * first, "warmup_max_lr": optim.lr,
                                "warmup_num_steps": optim.warmup_steps, "warmup_type": "linear"}}
    config.update({
        "train_micro_batch_size_per_gpu": optim.batch_size,
        "gradient_accumulation_steps": optim.gradient_accumulation_steps,
        "train_batch_size": optim.batch_size * optim.gradient_accumulation_steps * world_size,
        "gradient_clipping": optim.grad_clip,
        "bf16": {"enabled": resolve_precision(optim, on_cpu=on_cpu) == "bf16"},
        "fp16": {"enabled": False},
        # ZeRO with a client (torch) optimizer: DeepSpeed's fused Adam has no CPU build.
        "zero_allow_untested_optimizer": True,
        "scheduler": scheduler,
    })
    return config


def _locate(root: nn.Module, target: nn.Module) -> tuple[nn.Module, str] | None:
    for parent in root.modules():
        for name, child in parent._modules.items():  # noqa: SLF001 - we must edit the module tree itself
            if child is target:
                return parent, name
    return None


class FrozenOutsideZero3:
    """Keeps frozen modules out of ZeRO-3 partitioning for the life of an engine.

    Why: ZeRO-3 shards every parameter of the module it is given and gathers
    them around each forward. A frozen understanding encoder or VAE has no
    optimizer state to save memory on, would be all-gathered on every call for
    nothing, and is also called outside the engine (embedding cache, sampling)
    where no gather hooks run. So it is detached from the module tree before
    ``deepspeed.initialize`` and stays detached while the engine lives (ZeRO-3
    walks the tree at every step and cannot hold ordinary parameters); it stays
    reachable as an attribute, so the model's code still calls it, and is put
    back for saving and when training ends.
    """

    def __init__(self, root: nn.Module, frozen: Sequence[nn.Module], *, zero_stage: int) -> None:
        self.slots: list[tuple[nn.Module, str, nn.Module]] = []
        if zero_stage != 3:
            return
        for module in frozen:
            found = _locate(root, module)
            if found is not None:
                self.slots.append((*found, module))

    def detach(self) -> None:
        for parent, name, module in self.slots:
            if parent._modules.get(name) is module:  # noqa: SLF001 - editing the module tree itself
                del parent._modules[name]  # noqa: SLF001
                object.__setattr__(parent, name, module)

    def attach(self) -> None:
        for parent, name, module in self.slots:
            parent.__dict__.pop(name, None)
            parent._modules[name] = module  # noqa: SLF001

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """Put the frozen modules back for the duration of the block (saving the full model)."""
        self.attach()
        try:
            yield
        finally:
            self.detach()
