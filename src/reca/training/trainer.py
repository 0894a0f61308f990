"""The DeepSpeed trainer used by both `sft` and `train`: setup / train / save_checkpoint / cleanup.

One DeepSpeed engine wraps one module, the :class:`RecAObjective` with the
adapter inside it. Checkpoints go through DeepSpeed (so ZeRO partitions are
saved by the rank that owns them) but are serialised as safetensors; next to
each resumable checkpoint, rank 0 exports an HF-format model directory that
``from_pretrained`` loads.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from reca.objectives.reca import RecAObjective
from reca.params import OptimParams
from reca.training.batches import BatchPlanner
from reca.training.distributed import accelerator, barrier, init_distributed, is_rank_zero

LogFn = Callable[[int, dict[str, float]], None]
TAG_PREFIX = "step"


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps produced a NaN or infinite loss."""


def deepspeed_config(optim: OptimParams, *, on_cpu: bool) -> dict[str, Any]:
    """The DeepSpeed JSON config for one run (also logged as an artifact)."""
    return {
        "train_micro_batch_size_per_gpu": optim.batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": optim.grad_clip,
        "zero_optimization": {"stage": optim.zero_stage},
        # ZeRO with a client (torch) optimizer: DeepSpeed's fused Adam has no CPU build.
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": not on_cpu},
        "scheduler": {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": optim.steps,
                "warmup_num_steps": optim.warmup_steps,
                "warmup_type": "linear",
                "warmup_min_ratio": 0.0,
                "cos_min_ratio": optim.min_lr_ratio,
            },
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def _param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on biases, norms and embeddings' 1-D parameters, as is standard for transformers.
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """Runs ``optim.steps`` steps of the objective on batches from ``planner``."""

    def __init__(
        self,
        objective: RecAObjective,
        planner: BatchPlanner,
        optim: OptimParams,
        checkpoint_dir: str | Path,
        *,
        log_fn: LogFn | None = None,
        max_nonfinite: int = 5,
        desc: str = "train",
    ) -> None:
        self.desc = desc
        self.objective = objective
        self.planner = planner
        self.optim = optim
        self.checkpoint_dir = Path(checkpoint_dir)
        self.log_fn = log_fn
        self.max_nonfinite = max_nonfinite
        self.engine: Any = None
        self.step = 0
        self.skipped_steps = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Initialise the process group and the engine; resume from the latest checkpoint if any."""
        on_cpu = accelerator() == "cpu"
        self.rank, self.world_size = init_distributed()
        import deepspeed

        from reca.training.safetensors_checkpoint_engine import SafetensorsCheckpointEngine

        optimizer = torch.optim.AdamW(
            _param_groups(self.objective, self.optim.weight_decay), lr=self.optim.lr, betas=self.optim.betas
        )
        self.ds_config = deepspeed_config(self.optim, on_cpu=on_cpu)
        self.engine, _, _, _ = deepspeed.initialize(model=self.objective, optimizer=optimizer, config=self.ds_config)
        self.engine.checkpoint_engine = SafetensorsCheckpointEngine()
        if (self.checkpoint_dir / "latest").exists():
            _, client_state = self.engine.load_checkpoint(
                str(self.checkpoint_dir), load_optimizer_states=True, load_lr_scheduler_states=True
            )
            self.step = int(client_state["step"])
            self.skipped_steps = int(client_state.get("skipped_steps", 0))

    # ------------------------------------------------------------------ train
    def train(self) -> dict[str, float]:
        """Train until ``optim.steps``; return the mean of the last logged window."""
        if self.engine is None:
            raise RuntimeError("call setup() before train()")
        self.engine.train()
        consecutive_bad = 0
        window: list[dict[str, float]] = []
        t0, samples = time.perf_counter(), 0
        bar = tqdm(total=self.optim.steps, initial=self.step, desc=self.desc, unit="step", mininterval=2.0,
                   disable=not is_rank_zero())
        while self.step < self.optim.steps:
            batch = self.planner.batch(self.step)
            loss, terms = self.engine(batch)
            if not math.isfinite(terms["loss"]):
                # Skip the update entirely: one bad batch must not poison the weights.
                consecutive_bad += 1
                self.skipped_steps += 1
                self.engine.optimizer.zero_grad()
                if consecutive_bad >= self.max_nonfinite:
                    raise NonFiniteLossError(
                        f"{consecutive_bad} consecutive non-finite losses at step {self.step}; "
                        "lower the learning rate or check the data"
                    )
                self.step += 1
                bar.update(1)
                continue
            consecutive_bad = 0
            self.engine.backward(loss)
            self.engine.step()
            self.step += 1
            bar.update(1)
            samples += self.optim.batch_size * self.world_size
            window.append(terms)
            if self.step % self.optim.log_every == 0 or self.step == self.optim.steps:
                metrics = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
                metrics["lr"] = float(self.engine.get_lr()[0])
                elapsed = time.perf_counter() - t0
                metrics["samples_per_s"] = samples / elapsed if elapsed > 0 else 0.0
                metrics["skipped_steps"] = float(self.skipped_steps)
                self.history.append({"step": float(self.step), **metrics})
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", refresh=False)
                if self.log_fn is not None and is_rank_zero():
                    self.log_fn(self.step, metrics)
                window, t0, samples = [], time.perf_counter(), 0
            if self.step % self.optim.checkpoint_every == 0 and self.step < self.optim.steps:
                self.save_checkpoint()
        bar.close()
        return self.history[-1] if self.history else {}

    # ------------------------------------------------------------- checkpoint
    def save_checkpoint(self) -> Path:
        """Save a resumable checkpoint (every rank) plus an HF export (rank 0); prune old ones."""
        tag = f"{TAG_PREFIX}{self.step:07d}"
        # Every rank must call save_checkpoint: each writes its own ZeRO partition.
        self.engine.save_checkpoint(
            str(self.checkpoint_dir), tag=tag, client_state={"step": self.step, "skipped_steps": self.skipped_steps}
        )
        if is_rank_zero():
            self.objective.adapter.save_pretrained(self.checkpoint_dir / tag / "hf")
            self._prune()
        barrier()
        return self.checkpoint_dir / tag

    def _prune(self) -> None:
        tags = sorted(p for p in self.checkpoint_dir.glob(f"{TAG_PREFIX}*") if p.is_dir())
        for old in tags[: -self.optim.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def export(self, output_dir: str | Path) -> None:
        """Write the final model in HF format (rank 0)."""
        if is_rank_zero():
            self.objective.adapter.save_pretrained(output_dir)
        barrier()

    def cleanup(self) -> None:
        """Release the engine (the process group stays for the caller's lifetime)."""
        self.engine = None
