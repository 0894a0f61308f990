"""Trainer overhead and model FLOPs utilisation on this machine.

Runs the same RecA objective (default-world model size, same batches) three
ways and prints a table:

* a bare PyTorch loop (AdamW, clipping, no DeepSpeed): the baseline;
* :class:`reca.training.trainer.Trainer` with DeepSpeed ZeRO-0 and ZeRO-2.

FLOPs per step are counted by ``torch.utils.flop_counter`` on one real
forward+backward; MFU is achieved FLOP/s over the machine's measured fp32
matmul peak (large square ``torch.mm``, same thread count).

    DS_ACCELERATOR=cpu python benchmarks/bench_trainer.py [--steps 30] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
REPO = Path(__file__).resolve().parents[1]

import torch  # noqa: E402

from reca.models.janus_ar import JanusARAdapter, TinyJanusParams  # noqa: E402
from reca.objectives.reca import RecAObjective  # noqa: E402
from reca.objectives.templates import CAPTION_INSTRUCTIONS, RECONSTRUCTION_TEMPLATES  # noqa: E402
from reca.params import TrainParams  # noqa: E402
from reca.training.batches import BatchPlanner  # noqa: E402
from reca.training.trainer import Trainer  # noqa: E402


class RandomScenes:
    """Flat-coloured random blocks at 32 px, with captions: the shape of the default world's data."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.zeros(n, 3, 32, 32)
        for i in range(n):
            x0, y0 = (int(v) for v in torch.randint(0, 20, (2,), generator=g))
            self.x[i, :, y0 : y0 + 12, x0 : x0 + 12] = torch.rand(3, 1, 1, generator=g) * 2 - 1
        self.rows = [{"id": str(i), "caption": "a red circle left of a blue square"} for i in range(n)]

    def __len__(self) -> int:
        return len(self.rows)

    def pixels(self, idx, kind):  # noqa: ANN001, ANN201 - ImageTable duck type
        return self.x[list(idx)]

    def captions(self, idx):  # noqa: ANN001, ANN201
        return [self.rows[i]["caption"] for i in idx]


def build(batch: int) -> tuple[RecAObjective, BatchPlanner]:
    texts = [*RECONSTRUCTION_TEMPLATES, *CAPTION_INSTRUCTIONS, "a red circle left of a blue square"]
    data = RandomScenes(256, 0)
    adapter = JanusARAdapter.build_from_scratch(TinyJanusParams(kmeans_iters=3), texts=texts, images=data.x, seed=0)
    adapter.set_frozen(["understanding_encoder", "image_tokenizer"])
    objective = RecAObjective(adapter, lambda_reca=1.0, lambda_i2t=1.0, lambda_t2i=1.0)
    planner = BatchPlanner(batch_size=batch, seed=0, templates=RECONSTRUCTION_TEMPLATES,
                           instructions=CAPTION_INSTRUCTIONS, unlabeled=data, captioned=RandomScenes(256, 1))
    return objective, planner


def matmul_peak_gflops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def flops_per_step(objective: RecAObjective, planner: BatchPlanner) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = objective(planner.batch(0))
        loss.backward()
    objective.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def bare_loop(batch: int, steps: int, warmup: int) -> float:
    objective, planner = build(batch)
    opt = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        loss, _ = objective(planner.batch(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
        opt.step()
    return (time.perf_counter() - t0) / steps


def trainer_loop(batch: int, steps: int, warmup: int, zero: int) -> float:
    objective, planner = build(batch)
    params = TrainParams(steps=warmup + steps, batch_size=batch, lr=1e-4, warmup_steps=1, zero_stage=zero,
                         checkpoint_every=10**6, log_every=10**6)
    with tempfile.TemporaryDirectory() as ckpt:
        trainer = Trainer(objective, planner, params, ckpt, root=REPO)
        trainer.setup()
        timings: list[float] = []
        original = planner.batch

        def timed(step: int, micro: int = 0):  # noqa: ANN202
            timings.append(time.perf_counter())
            return original(step, micro)

        planner.batch = timed
        trainer.train()
        end = time.perf_counter()
        trainer.cleanup()
    return (end - timings[warmup]) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    peak = matmul_peak_gflops()
    objective, planner = build(args.batch)
    flops = flops_per_step(objective, planner)
    rows = [("bare PyTorch loop", bare_loop(args.batch, args.steps, args.warmup))]
    for zero in (0, 2):
        rows.append((f"Trainer (DeepSpeed ZeRO-{zero})", trainer_loop(args.batch, args.steps, args.warmup, zero)))
    base = rows[0][1]
    print(f"\nthreads={torch.get_num_threads()}  batch={args.batch} (x3 loss terms)  steps={args.steps}  "
          f"FLOPs/step={flops / 1e9:.2f} G  fp32 matmul peak={peak:.1f} GFLOP/s\n")
    print(f"| {'variant':<30} | {'ms/step':>8} | {'vs bare':>7} | {'GFLOP/s':>8} | {'MFU':>6} |")
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 9}|{'-' * 10}|{'-' * 8}|")
    for name, seconds in rows:
        achieved = flops / seconds / 1e9
        print(f"| {name:<30} | {seconds * 1e3:8.1f} | {seconds / base:6.2f}x | {achieved:8.1f} | "
              f"{achieved / peak:6.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
