"""A RecA training step with cached h_v features against one that runs the frozen encoder.

With the understanding encoder frozen, `train` reads its output from the
`embed` cache (:mod:`reca.data.embedding_cache`) instead of running it every
step. This times one reconstruction step (forward, backward, AdamW) both ways
on the same batches, for two model shapes:

* the default world's model (params.yaml ``model.tiny``: small encoder, 32 px);
* a vision-heavy one (a 6-layer, 256-wide encoder on 64 px images), closer to
  real UMMs, whose SigLIP/ViT encoders are a large share of a forward pass.

The cached features are read back from a real sharded cache written by the
same code `embed` uses.

    python benchmarks/bench_embedding_cache.py [--steps 20] [--batch 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from reca.data import embedding_cache as cache
from reca.models.janus_ar import JanusARAdapter, TinyJanusParams
from reca.objectives.reca import RecAObjective, ReconstructionBatch, TrainBatch
from reca.objectives.templates import RECONSTRUCTION_TEMPLATES

SHAPES = {
    "default world (params.yaml tiny)": TinyJanusParams(kmeans_iters=3),
    "vision-heavy (6x256 encoder, 64 px)": TinyJanusParams(
        vision_hidden_size=256, vision_layers=6, vision_heads=8, image_size=64, vision_patch_size=8,
        token_patch_size=8, codebook_size=256, kmeans_iters=3),
}


def scenes(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, size, size)
    for i in range(n):
        s = size // 3
        x0, y0 = (int(v) for v in torch.randint(0, size - s, (2,), generator=g))
        x[i, :, y0:y0 + s, x0:x0 + s] = torch.rand(3, 1, 1, generator=g) * 2 - 1
    return x


def cached_features(adapter: JanusARAdapter, pixels: torch.Tensor, directory: str) -> torch.Tensor:
    """Write the encoder's features through the embed cache and read them back as `train` does."""
    rows = [{"id": str(i), "sha256": ""} for i in range(len(pixels))]
    shards = cache.plan_shards("unlabeled", rows, 64)
    with torch.no_grad():
        for s in shards:
            feats = adapter.understanding_features(pixels[s.start:s.start + s.count]).float()
            cache.write_shard(directory, s, feats, "bench", "float32")
    cache.write_index(directory, "bench", {}, "float32", {"unlabeled": shards}, {})
    return cache.read_split(directory, "unlabeled", key="bench", ids=[r["id"] for r in rows])


def step_seconds(objective: RecAObjective, pixels: torch.Tensor, features: torch.Tensor | None, batch: int,
                 steps: int, warmup: int) -> float:
    opt = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        idx = torch.randint(0, len(pixels), (batch,), generator=g)
        rec = ReconstructionBatch(
            targets=pixels[idx], templates=[RECONSTRUCTION_TEMPLATES[0]] * batch,
            drop=torch.zeros(batch, dtype=torch.bool),
            pixels=None if features is not None else pixels[idx],
            features=None if features is None else features[idx],
        )
        loss, _ = objective(TrainBatch(reconstruction=rec))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for name, tiny in SHAPES.items():
        pixels = scenes(128, tiny.image_size)
        adapter = JanusARAdapter.build_from_scratch(tiny, texts=[*RECONSTRUCTION_TEMPLATES, "a red square"],
                                                    images=pixels, seed=0)
        adapter.set_frozen(["understanding_encoder", "image_tokenizer"])
        objective = RecAObjective(adapter, lambda_reca=1.0, lambda_i2t=0.0, lambda_t2i=0.0)
        with tempfile.TemporaryDirectory() as directory:
            features = cached_features(adapter, pixels, directory)
        live = step_seconds(objective, pixels, None, args.batch, args.steps, args.warmup)
        cached = step_seconds(objective, pixels, features, args.batch, args.steps, args.warmup)
        encoder = sum(p.numel() for p in adapter.parts()["understanding_encoder"].parameters())
        total = sum(p.numel() for p in adapter.parameters())
        rows.append((name, encoder / total, live, cached))
    print(f"\nbatch {args.batch}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"{torch.get_num_threads()} threads\n")
    print(f"| {'model':<36} | {'encoder share':>13} | {'encoder run (ms)':>16} | {'cached h_v (ms)':>15} | "
          f"{'speed-up':>8} |")
    print(f"|{'-' * 38}|{'-' * 15}|{'-' * 18}|{'-' * 17}|{'-' * 10}|")
    for name, share, live, cached in rows:
        print(f"| {name:<36} | {share:12.0%}  | {live * 1e3:16.1f} | {cached * 1e3:15.1f} | {live / cached:7.2f}x |")
    print("\nencoder share: the understanding encoder's fraction of the model's parameters.")


if __name__ == "__main__":
    main()
