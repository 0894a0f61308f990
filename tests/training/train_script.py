"""A tiny RecA training run as a standalone script, for tests that need real processes.

Launched by tests under ``torchrun`` (2 processes) or killed with SIGKILL
mid-run; writes the per-step losses and the final weights (rank 0).
Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for reca_fixtures
os.environ.setdefault("DS_ACCELERATOR", "cpu")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--zero", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--load-saved", action="store_true",
                        help="save the model, then load it as the train stage does (under ZeRO-3: into partitions)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds per step (to be killed mid-run)")
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file

    from reca.distributed import init_distributed, is_rank_zero
    from reca.models.loading import load_model_dir
    from reca.objectives.reca import RecAObjective
    from reca.params import ModelParams, TrainParams
    from reca.training.batches import BatchPlanner
    from reca.training.runs import load_for_training
    from reca.training.trainer import Trainer
    from reca_fixtures import REPO
    from reca_fixtures.models import TEXTS, MemoryTable, build_tiny_adapter, tiny_pixels

    rank, world = init_distributed()
    torch.manual_seed(0)
    frozen = ["understanding_encoder", "image_tokenizer"]
    optim = TrainParams(steps=args.steps, batch_size=args.batch, gradient_accumulation_steps=args.accumulation,
                        lr=3e-3, warmup_steps=1, zero_stage=args.zero, checkpoint_every=args.checkpoint_every,
                        log_every=1, keep_checkpoints=2, precision=args.precision)
    if args.load_saved:
        saved = Path(args.out) / "saved"
        if is_rank_zero():
            build_tiny_adapter(seed=0).save_pretrained(saved)
        torch.distributed.barrier()
        os.chdir(REPO)  # the DeepSpeed configs are read from the working directory, as the stages do
        adapter = load_for_training(lambda: load_model_dir(saved, ModelParams(adapter="janus_ar")), optim, frozen)
        _write_partition_report(adapter, frozen, Path(args.out) / f"partitions_rank{rank}.json")
    else:
        adapter = build_tiny_adapter(seed=0)
        adapter.set_frozen(frozen)
    planner = BatchPlanner(batch_size=args.batch, seed=3, rank=rank, world_size=world,
                           accumulation=args.accumulation, cfg_dropout=0.2, templates=TEXTS[2:],
                           instructions=TEXTS[3:], unlabeled=MemoryTable(tiny_pixels(24, seed=1)),
                           captioned=MemoryTable(tiny_pixels(24)))
    if args.sleep:
        original = planner.batch

        def slow_batch(step, micro=0):
            time.sleep(args.sleep)
            return original(step, micro)

        planner.batch = slow_batch
    objective = RecAObjective(adapter, lambda_reca=1.0, lambda_i2t=0.0, lambda_t2i=1.0)
    losses = []
    trainer = Trainer(objective, planner, optim, args.ckpt, root=REPO, log_fn=lambda s, m: losses.append(m["loss"]),
                      frozen_parts=("understanding_encoder", "image_tokenizer"))
    trainer.setup()
    if args.load_saved:
        frozen_dtypes = {str(p.dtype) for name in frozen for p in adapter.parts()[name].parameters()}
        (Path(args.out) / f"frozen_dtypes_rank{rank}.json").write_text(json.dumps(sorted(frozen_dtypes)))
    trainer.train()
    final = Path(args.out) / "final"
    trainer.export(final)
    if is_rank_zero():
        state = {k: v.contiguous() for k, v in objective.adapter.model.state_dict().items()}
        save_file({k: v.clone() for k, v in state.items()}, str(Path(args.out) / "weights.safetensors"))
        (Path(args.out) / "losses.json").write_text(json.dumps(losses))


def _write_partition_report(adapter, frozen: list[str], path: Path) -> None:
    """What this rank holds right after loading: ZeRO-3 partitions of the trained parts, frozen parts whole."""
    from reca.training.zero3 import full_numel, is_partitioned

    parts = adapter.parts()
    frozen_params = [p for name in frozen for p in parts[name].parameters()]
    frozen_ids = {id(p) for p in frozen_params}
    trained = [p for p in adapter.parameters() if id(p) not in frozen_ids]
    path.write_text(json.dumps({
        "trained_full_numel": sum(full_numel(p) for p in trained),
        "trained_partitioned": sum(is_partitioned(p) for p in trained),
        "trained_count": len(trained),
        # what this rank stores of them: its ZeRO-3 partitions
        "trained_local_numel": sum(p.ds_tensor.numel() if is_partitioned(p) else p.numel() for p in trained),
        "frozen_partitioned": sum(is_partitioned(p) for p in frozen_params),
        "frozen_digest": float(sum(p.double().sum().item() for p in frozen_params)),
    }))


if __name__ == "__main__":
    main()
