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
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from reca.data import embedding_cache as cache
from reca.data.dataset import ImageTable, read_pixels
from reca.fileio import read_json
from reca.models.base import UMMAdapter
from reca.models.loading import load_model_dir
from reca.params import EmbedParams, ModelParams
from reca.stage_files import DEGRADE_RECORD
from reca.tracking.mlflow_run import StageRun


def _features(adapter: UMMAdapter, degraded_dir: Path, rows: list[dict[str, Any]], batch_size: int) -> torch.Tensor:
    chunks = []
    for start in range(0, len(rows), batch_size):
        pixels = read_pixels(degraded_dir, rows[start:start + batch_size], "understanding")
        chunks.append(adapter.understanding_features(pixels).float())
    return torch.cat(chunks)


def run(params: EmbedParams, model: ModelParams, degraded_dir: str | Path, model_dir: str | Path,
        output_dir: str | Path, tracker: StageRun | None = None) -> dict[str, Any]:
    """Compute (or reuse) every shard of every split in ``params.splits``; return counts and the cache key."""
    degraded_dir, output_dir = Path(degraded_dir), Path(output_dir)
    adapter = load_model_dir(model_dir, model).eval()
    record = read_json(degraded_dir / DEGRADE_RECORD)
    if record["understanding_size"] != adapter.understanding_size:
        raise ValueError(
            f"degrade.understanding_size is {record['understanding_size']} but the model's understanding encoder "
            f"takes {adapter.understanding_size}px: set degrade.understanding_size: {adapter.understanding_size}"
        )
    fingerprint = adapter.encoder_fingerprint()
    key = cache.cache_key(adapter.name, fingerprint, model.revision, record)
    output_dir.mkdir(parents=True, exist_ok=True)
    cache.invalidate_index(output_dir, key)
    plans: dict[str, list[cache.Shard]] = {}
    shapes: dict[str, list[int]] = {}
    computed = reused = 0
    with torch.no_grad():
        for split in params.splits:
            rows = ImageTable.from_manifest(degraded_dir, split).rows
            if not rows:
                raise ValueError(f"split {split!r} has no images in {degraded_dir}; remove it from embed.splits")
            plans[split] = cache.plan_shards(split, rows, params.shard_size)
            for shard in tqdm(plans[split], desc=f"embed {split}", unit="shard"):
                if cache.shard_is_current(output_dir, shard, key, params.dtype):
                    reused += 1
                    continue
                features = _features(adapter, degraded_dir, rows[shard.start:shard.start + shard.count],
                                     params.batch_size)
                cache.write_shard(output_dir, shard, features, key, params.dtype)
                shapes[split] = list(features.shape[1:])
                computed += 1
            if split not in shapes:  # every shard reused: read the shape from the first one
                shapes[split] = list(cache.read_shard_shape(output_dir, plans[split][0]))
    made_from = {"adapter": adapter.name, "encoder_fingerprint": fingerprint, "revision": model.revision,
                 "degrade": record}
    cache.write_index(output_dir, key, made_from, params.dtype, plans, shapes)
    removed = cache.remove_unlisted_shards(output_dir, {s.file for shards in plans.values() for s in shards})
    summary = {"key": key, "shards_computed": computed, "shards_reused": reused, "shards_removed": len(removed),
               "splits": {split: [sum(s.count for s in shards), *shapes[split]] for split, shards in plans.items()}}
    print(f"embed: {computed} shards computed, {reused} reused (key {key})", file=sys.stderr)
    if tracker is not None:
        tracker.set_tags({"reca.embedding_cache_key": key})
        tracker.log_metrics({"shards_computed": computed, "shards_reused": reused,
                             **{f"images.{s}": n[0] for s, n in summary["splits"].items()}})
    return summary
