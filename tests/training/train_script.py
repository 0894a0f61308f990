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
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds per step (to be killed mid-run)")
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file

    from reca.distributed import init_distributed, is_rank_zero
    from reca.objectives.reca import RecAObjective
    from reca.params import TrainParams
    from reca.training.batches import BatchPlanner
    from reca.training.trainer import Trainer
    from reca_fixtures import REPO
    from reca_fixtures.models import TEXTS, MemoryTable, build_tiny_adapter, tiny_pixels

    rank, world = init_distributed()
    torch.manual_seed(0)
    adapter = build_tiny_adapter(seed=0)
    adapter.set_frozen(["understanding_encoder", "image_tokenizer"])
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
    optim = TrainParams(steps=args.steps, batch_size=args.batch, gradient_accumulation_steps=args.accumulation,
                        lr=3e-3, warmup_steps=1, zero_stage=args.zero, checkpoint_every=args.checkpoint_every,
                        log_every=1, keep_checkpoints=2)
    objective = RecAObjective(adapter, lambda_reca=1.0, lambda_i2t=0.0, lambda_t2i=1.0)
    losses = []
    trainer = Trainer(objective, planner, optim, args.ckpt, root=REPO, log_fn=lambda s, m: losses.append(m["loss"]),
                      frozen_parts=("understanding_encoder", "image_tokenizer"))
    trainer.setup()
    trainer.train()
    final = Path(args.out) / "final"
    trainer.export(final)
    if is_rank_zero():
        state = {k: v.contiguous() for k, v in objective.adapter.model.state_dict().items()}
        save_file({k: v.clone() for k, v in state.items()}, str(Path(args.out) / "weights.safetensors"))
        (Path(args.out) / "losses.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    main()
