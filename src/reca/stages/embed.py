"""`embed`: cache the understanding-encoder features of the degraded images, shard by shard.

``h_v = projector(encoder(degrade(I)))``; the encoder is frozen during RecA,
so its output is computed once here and `train` reads it instead of running
the encoder every step. The features come from the model RecA starts from
(``models/sft``), never from another checkpoint.

The cache (:mod:`reca.data.embedding_cache`) is keyed by the encoder's weight
fingerprint, the model revision and the `degrade` settings, and written one
shard at a time: a rerun after an interruption, or after a change that
leaves some shards valid, skips every shard already on disk for the same
key, rows and dtype. The output directory is therefore not replaced
wholesale (DVC keeps it with ``persist: true``); shards that no longer
belong to the cache are deleted at the end.

With ``embed.processes`` > 1 (``reca embed`` relaunches itself as `train`
does) every process runs the encoder on its own accelerator and encodes whole
shards: the shards still to compute are dealt out round-robin, each written by
exactly one rank with the batches one process would use, so the cache is byte
for byte the one process's. Rank 0 writes the index once every shard is
there. Every process writes into the output directory, which on several nodes
must be storage they all see (as `train`, which reads the cache on every
rank, needs anyway).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from reca.data import embedding_cache as cache
from reca.data.dataset import ImageTable, read_pixels
from reca.distributed import join_workers
from reca.fileio import read_json
from reca.models.base import UMMAdapter
from reca.models.loading import load_model_dir
from reca.params import EmbedParams, ModelParams
from reca.stage_files import DEGRADE_RECORD
from reca.tracking.mlflow_run import StageRun


def _features(adapter: UMMAdapter, degraded_dir: Path, rows: list[dict[str, Any]], batch_size: int,
              device: torch.device | None = None) -> torch.Tensor:
    chunks = []
    for start in range(0, len(rows), batch_size):
        pixels = read_pixels(degraded_dir, rows[start:start + batch_size], "understanding")
        chunks.append(adapter.understanding_features(pixels.to(device)).float().cpu())
    return torch.cat(chunks)


def run(params: EmbedParams, model: ModelParams, degraded_dir: str | Path, model_dir: str | Path,
        output_dir: str | Path, tracker: StageRun | None = None) -> dict[str, Any]:
    """Compute (or reuse) every shard of every split in ``params.splits``; return counts and the cache key.

    Under a launcher, each process computes its share of the shards; rank 0
    returns the summary, the other ranks what they computed.
    """
    degraded_dir, output_dir = Path(degraded_dir), Path(output_dir)
    workers = join_workers()
    adapter = load_model_dir(model_dir, model).eval().to(workers.device)
    record = read_json(degraded_dir / DEGRADE_RECORD)
    if record["understanding_size"] != adapter.understanding_size:
        raise ValueError(
            f"degrade.understanding_size is {record['understanding_size']} but the model's understanding encoder "
            f"takes {adapter.understanding_size}px: set degrade.understanding_size: {adapter.understanding_size}"
        )
    fingerprint = adapter.encoder_fingerprint()
    key = cache.cache_key(adapter.name, fingerprint, model.revision, record)
    output_dir.mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[dict[str, Any]]] = {}
    plans: dict[str, list[cache.Shard]] = {}
    for split in params.splits:
        tables[split] = ImageTable.from_manifest(degraded_dir, split).rows
        if not tables[split]:
            raise ValueError(f"split {split!r} has no images in {degraded_dir}; remove it from embed.splits")
        plans[split] = cache.plan_shards(split, tables[split], params.shard_size)
    # Every rank reads the same headers before any rank writes, so all agree on what is left to do.
    todo = [shard for shards in plans.values() for shard in shards
            if not cache.shard_is_current(output_dir, shard, key, params.dtype)]
    if workers.is_main:
        cache.invalidate_index(output_dir, key)
    workers.barrier()
    mine = [todo[i] for i in workers.share(len(todo))]
    with torch.no_grad():
        for shard in tqdm(mine, desc="embed", unit="shard", disable=not workers.is_main):
            rows = tables[shard.split][shard.start:shard.start + shard.count]
            features = _features(adapter, degraded_dir, rows, params.batch_size, workers.device)
            cache.write_shard(output_dir, shard, features, key, params.dtype)
    workers.barrier()  # every shard is on disk
    if not workers.is_main:
        return {"key": key, "rank": workers.rank, "shards_computed": len(mine)}
    computed = len(todo)
    reused = sum(len(shards) for shards in plans.values()) - computed
    shapes = {split: list(cache.read_shard_shape(output_dir, shards[0])) for split, shards in plans.items()}
    made_from = {"adapter": adapter.name, "encoder_fingerprint": fingerprint, "revision": model.revision,
                 "degrade": record}
    cache.write_index(output_dir, key, made_from, params.dtype, plans, shapes)
    removed = cache.remove_unlisted_shards(output_dir, {s.file for shards in plans.values() for s in shards})
    summary = {"key": key, "shards_computed": computed, "shards_reused": reused, "shards_removed": len(removed),
               "processes": workers.world_size,
               "splits": {split: [sum(s.count for s in shards), *shapes[split]] for split, shards in plans.items()}}
    print(f"embed: {computed} shards computed, {reused} reused (key {key}, {workers.world_size} processes)",
          file=sys.stderr)
    if tracker is not None:
        tracker.set_tags({"reca.embedding_cache_key": key})
        tracker.log_metrics({"shards_computed": computed, "shards_reused": reused,
                             **{f"images.{s}": n[0] for s, n in summary["splits"].items()}})
    return summary
