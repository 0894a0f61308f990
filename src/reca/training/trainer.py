"""The DeepSpeed trainer used by both `sft` and `train`: setup / train / save_checkpoint / cleanup.

One DeepSpeed engine wraps one module, the :class:`RecAObjective` with the
adapter inside it. Checkpoints go through DeepSpeed (so every rank saves the
ZeRO partition it owns) but are serialised as safetensors; next to each
resumable checkpoint, rank 0 exports consolidated HF-format weights that
``from_pretrained`` loads, and only then moves the ``latest`` pointer, so a
crash mid-save leaves ``latest`` on the previous complete checkpoint.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from reca.distributed import accelerator, barrier, init_distributed, is_rank_zero
from reca.fileio import write_text
from reca.objectives.reca import RecAObjective
from reca.params import OptimParams
from reca.training.batches import BatchPlanner
from reca.training.monitors import TokenCopyingMonitor, peak_memory_mb
from reca.training.zero3 import full_ndim, place_frozen

LogFn = Callable[[int, dict[str, float]], None]
Terms = dict[str, "torch.Tensor | float"]
MilestoneFn = Callable[[int, Path], None]
WarnFn = Callable[[str, str], None]
TAG_PREFIX = "step"


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps produced a NaN or infinite loss."""


def _param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on biases and norm weights (1-D parameters), as is standard for transformers.
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:  # by the whole parameter's shape: a ZeRO-3 partition is 1-D
            (decay if full_ndim(p) >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _all_mean(values: dict[str, float]) -> dict[str, float]:
    """Mean of each value over ranks (what a single process with the global batch would log)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    t /= torch.distributed.get_world_size()
    return dict(zip(keys, t.tolist(), strict=True))


def _any_rank(flag: bool) -> bool:
    """True if ``flag`` holds on any rank: every rank must take the same branch around collectives."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    torch.distributed.all_reduce(t)
    return bool(t.item() > 0)


def check_weights_dtype(objective: torch.nn.Module, ds_config: dict[str, Any]) -> None:
    """Refuse half-precision trainable weights without DeepSpeed's bf16 mode.

    With ``bf16`` enabled DeepSpeed keeps fp32 master weights and optimizer
    states; without it, AdamW would update bf16 weights directly and small
    updates would round away.
    """
    half = {p.dtype for p in objective.parameters() if p.requires_grad} - {torch.float32}
    if half and not ds_config.get("bf16", {}).get("enabled"):
        raise ValueError(f"trainable weights are {sorted(map(str, half))} but training runs in fp32: set the stage's "
                         "precision: bf16 (fp32 master weights), or model.dtype: float32")


class Trainer:
    """Runs ``optim.steps`` optimiser steps of the objective on batches from ``planner``."""

    def __init__(
        self,
        objective: RecAObjective,
        planner: BatchPlanner,
        optim: OptimParams,
        checkpoint_dir: str | Path,
        *,
        log_fn: LogFn | None = None,
        milestone_fn: MilestoneFn | None = None,
        warn_fn: WarnFn | None = None,
        frozen_parts: tuple[str, ...] = (),
        copy_warn_ratio: float = 0.0,
        desc: str = "train",
        root: str | Path = ".",
    ) -> None:
        self.objective = objective
        self.planner = planner
        self.optim = optim
        self.checkpoint_dir = Path(checkpoint_dir)
        self.log_fn = log_fn
        self.milestone_fn = milestone_fn
        self.warn_fn = warn_fn
        self.frozen_parts = frozen_parts
        self.max_nonfinite = optim.max_nonfinite
        self.desc = desc
        self.root = Path(root)
        self.copy_monitor = TokenCopyingMonitor(copy_warn_ratio) if copy_warn_ratio > 0 else None
        self.engine: Any = None
        self.step = 0
        self.skipped_steps = 0
        self.history: list[dict[str, float]] = []
        self.ds_config: dict[str, Any] = {}
        self.frozen: Any = None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Initialise the process group and the engine; resume from the latest checkpoint if any."""
        on_cpu = accelerator() == "cpu"
        self.rank, self.world_size = init_distributed()
        import deepspeed

        from reca.training.deepspeed_setup import FrozenOutsideZero3, build_config
        from reca.training.safetensors_checkpoint_engine import SafetensorsCheckpointEngine

        self.ds_config = build_config(self.optim, on_cpu=on_cpu, world_size=self.world_size, root=self.root)
        check_weights_dtype(self.objective, self.ds_config)
        optimizer = torch.optim.AdamW(
            _param_groups(self.objective, self.optim.weight_decay), lr=self.optim.lr, betas=self.optim.betas,
            # one kernel per tensor, in place: the default CPU path allocates a temporary the size
            # of each parameter (1.8 GB at the peak for Janus-Pro-1B's embeddings), and is slower
            fused=True,
        )
        parts = self.objective.adapter.parts()
        frozen = [parts[name] for name in self.frozen_parts if name in parts]
        self.frozen = FrozenOutsideZero3(self.objective, frozen, zero_stage=self.optim.zero_stage)
        self.frozen.detach()
        self.engine, _, _, _ = deepspeed.initialize(model=self.objective, optimizer=optimizer, config=self.ds_config)
        if self.frozen.slots:
            # Outside the engine, nothing casts or places them: match the engine's compute dtype and device.
            bf16 = self.ds_config["bf16"]["enabled"]
            place_frozen(frozen, dtype=torch.bfloat16 if bf16 else None, device=self.engine.device)
        self.engine.checkpoint_engine = SafetensorsCheckpointEngine()
        if self.world_size == 1 and self.optim.zero_stage == 0:
            # One process has nothing to average, but DeepSpeed's stage-0 all-reduce would still copy
            # every gradient into flat buckets of up to 500M elements and back: gigabytes, for nothing.
            self.engine.enable_backward_allreduce = False
        scheduler = self.engine.lr_scheduler
        if scheduler is not None and getattr(scheduler, "last_batch_iteration", 0) < 0:
            # WarmupCosineLR starts "before step 0" at lr 0 and only advances after
            # an optimiser step, so the first step would not train: put it at step 0.
            scheduler.step(0)
        if (self.checkpoint_dir / "latest").exists():
            # Frozen weights are not in the checkpoint (see save_checkpoint): they come from the model
            # the stage loaded, so the module load is not strict about them.
            _, client_state = self.engine.load_checkpoint(
                str(self.checkpoint_dir), load_optimizer_states=True, load_lr_scheduler_states=True,
                load_module_strict=False,
            )
            self.step = int(client_state["step"])
            self.skipped_steps = int(client_state.get("skipped_steps", 0))
            if self.copy_monitor is not None:
                self.copy_monitor.baseline = client_state.get("copy_baseline")
        if self.copy_monitor is not None and self.copy_monitor.baseline is None and self.objective.lambda_reca > 0:
            # The starting model's reconstruction loss: what "far below" is measured against.
            with torch.no_grad():
                self.objective.eval()
                first = self.planner.batch(0).to(self.engine.device)
                baseline = self.objective.reconstruction_loss(first.reconstruction).item()
                self.objective.train()
            self.copy_monitor.baseline = _all_mean({"b": baseline})["b"]

    # ------------------------------------------------------------------ train
    def _micro_step(self, step: int, micro: int) -> Terms | None:
        """Forward and backward one micro-batch; ``None`` if its loss was non-finite on any rank."""
        # Losses that draw noise (diffusion time, masking) take it from torch's generator:
        # seeding it from (seed, micro-step, rank) makes a resumed run draw what an
        # uninterrupted one would have.
        micro_step = step * self.optim.gradient_accumulation_steps + micro
        torch.manual_seed((self.optim.seed * 1_000_003 + micro_step) * 1009 + self.rank)
        # Tables build batches on the CPU; the engine's module lives on its device.
        batch = self.planner.batch(step, micro).to(self.engine.device)
        loss, terms = self.engine(batch)
        # The one read-back of a step: every rank must agree on skipping it.
        if _any_rank(not bool(torch.isfinite(loss.detach()))):
            if self.optim.gradient_accumulation_steps == 1:
                return None
            if self.optim.zero_stage == 3:
                raise NonFiniteLossError(
                    f"non-finite loss at step {step} micro-batch {micro}: with ZeRO-3 and gradient "
                    "accumulation the step cannot be skipped; lower the learning rate or check the data"
                )
            # Keep DeepSpeed's accumulation counters and collectives aligned with a
            # backward that adds exactly zero gradient, instead of the poisoned one.
            zero = sum((p * 0.0).sum() for p in self.objective.parameters() if p.requires_grad)
            self.engine.backward(zero)
            self.engine.step()
            return None
        self.engine.backward(loss)
        self.engine.step()
        return {**terms, "tokens": float(self.objective.supervised_tokens(batch))}

    def train(self) -> dict[str, float]:
        """Train until ``optim.steps``; return the last logged metrics."""
        if self.engine is None:
            raise RuntimeError("call setup() before train()")
        self.engine.train()
        consecutive_bad = 0
        window: list[Terms] = []
        t0, samples, tokens = time.perf_counter(), 0, 0.0
        bar = tqdm(total=self.optim.steps, initial=self.step, desc=self.desc, unit="step", mininterval=2.0,
                   disable=not is_rank_zero(), file=sys.stderr)
        accumulation = self.optim.gradient_accumulation_steps
        while self.step < self.optim.steps:
            if accumulation == 1:
                results = [self._micro_step(self.step, 0)]
            else:
                results = [self._micro_step(self.step, m) for m in range(accumulation)]
            good = [r for r in results if r is not None]
            if not good:
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
            self.skipped_steps += len(results) - len(good)
            self.step += 1
            bar.update(1)
            samples += self.optim.batch_size * len(good) * self.world_size
            tokens += sum(r.get("tokens", 0.0) for r in good) * self.world_size
            window.extend({k: v for k, v in r.items() if k != "tokens"} for r in good)
            if self.step % self.optim.log_every == 0 or self.step == self.optim.steps:
                self._log(window, time.perf_counter() - t0, samples, tokens, bar)
                window, t0, samples, tokens = [], time.perf_counter(), 0, 0.0
            if self.step % self.optim.checkpoint_every == 0 and self.step < self.optim.steps:
                self.save_checkpoint()
            if self.optim.milestone_every and self.step % self.optim.milestone_every == 0:
                self._milestone()
        bar.close()
        return self.history[-1] if self.history else {}

    def _log(self, window: list[Terms], elapsed: float, samples: int, tokens: float, bar: tqdm) -> None:
        # Term values stay on the device until here: read them once per logged step, not per term per step.
        metrics = _all_mean({k: sum(float(w[k]) for w in window) / len(window) for k in window[0]})
        metrics["lr"] = float(self.engine.get_lr()[0])
        metrics["samples_per_s"] = samples / elapsed if elapsed > 0 else 0.0
        metrics["tokens_per_s"] = tokens / elapsed if elapsed > 0 else 0.0
        metrics["skipped_steps"] = float(self.skipped_steps)
        metrics["peak_memory_mb"] = peak_memory_mb()
        self.history.append({"step": float(self.step), **metrics})
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", refresh=False)
        if self.copy_monitor is not None and "loss_reca" in metrics:
            message = self.copy_monitor.check(self.step, metrics["loss_reca"])
            if message and is_rank_zero():
                tqdm.write(f"WARNING: {message}", file=sys.stderr)
                if self.warn_fn is not None:
                    self.warn_fn("reca.token_copying_warning", message)
        if self.log_fn is not None and is_rank_zero():
            self.log_fn(self.step, metrics)

    # ------------------------------------------------------------- checkpoint
    def _export_hf(self, directory: Path) -> None:
        """Consolidated HF weights on rank 0 (ZeRO-3 partitions gathered first, on every rank)."""
        if self.optim.zero_stage == 3:
            import deepspeed

            partitioned = [p for p in self.objective.parameters() if hasattr(p, "ds_id")]
            with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None), self.frozen.attached():
                if is_rank_zero():
                    self.objective.adapter.save_pretrained(directory)
        elif is_rank_zero():
            self.objective.adapter.save_pretrained(directory)

    def save_checkpoint(self) -> Path:
        """Save a resumable checkpoint (every rank); prune old ones.

        Each weight is written once: the trainable ones with their optimizer
        state, the frozen ones not at all (the stage's input model holds them,
        and a 7B model's frozen encoder need not be copied every
        ``checkpoint_every`` steps). Loadable HF exports are the milestones and
        the stage's output.
        """
        tag = f"{TAG_PREFIX}{self.step:07d}"
        client_state = {"step": self.step, "skipped_steps": self.skipped_steps}
        if self.copy_monitor is not None and self.copy_monitor.baseline is not None:
            client_state["copy_baseline"] = self.copy_monitor.baseline
        # Every rank must call save_checkpoint: each writes its own ZeRO partition.
        self.engine.save_checkpoint(str(self.checkpoint_dir), tag=tag, client_state=client_state,
                                    save_latest=False, exclude_frozen_parameters=True)
        barrier()
        if is_rank_zero():
            write_text(self.checkpoint_dir / "latest", tag)
            self._prune()
        barrier()
        return self.checkpoint_dir / tag

    def _milestone(self) -> None:
        directory = self.checkpoint_dir / "milestones" / f"{TAG_PREFIX}{self.step:07d}"
        self._export_hf(directory)
        barrier()
        if is_rank_zero() and self.milestone_fn is not None:
            self.milestone_fn(self.step, directory)

    def _prune(self) -> None:
        tags = sorted(p for p in self.checkpoint_dir.glob(f"{TAG_PREFIX}*") if p.is_dir())
        for old in tags[: -self.optim.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def export(self, output_dir: str | Path) -> None:
        """Write the final model in HF format (gathered from every rank under ZeRO-3)."""
        self._export_hf(Path(output_dir))
        barrier()

    def cleanup(self) -> None:
        """Release the engine and restore the module tree (the process group stays)."""
        if self.engine is not None:
            self.frozen.attach()
        self.engine = None

