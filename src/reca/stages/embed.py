"""`embed`: cache the understanding-encoder features of the degraded images.

``h_v = projector(encoder(degrade(I)))``; the encoder is frozen during RecA,
so its output is computed once here and `train` reads it instead of running
the encoder every step. The features come from the model RecA starts from
(``models/sft``), never from another checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from reca.data import embedding_cache
from reca.data.dataset import ImageTable
from reca.fileio import atomic_dir, read_json
from reca.params import EmbedParams, ModelParams
from reca.stages.degrade import RECORD as DEGRADE_RECORD
from reca.stages.model_loading import load_model_dir


def run(params: EmbedParams, model: ModelParams, degraded_dir: str | Path, model_dir: str | Path,
        output_dir: str | Path) -> dict[str, Any]:
    """Write one feature file per split in ``params.splits``; return shapes and the cache key."""
    adapter = load_model_dir(model_dir, model).eval()
    record = read_json(Path(degraded_dir) / DEGRADE_RECORD)
    if record["understanding_size"] != adapter.understanding_size:
        raise ValueError(
            f"degrade.understanding_size is {record['understanding_size']} but the model's understanding encoder "
            f"takes {adapter.understanding_size}px: set degrade.understanding_size: {adapter.understanding_size}"
        )
    key = embedding_cache.cache_key(adapter.name, adapter.encoder_fingerprint(), record)
    summary: dict[str, Any] = {"key": key, "splits": {}}
    with atomic_dir(output_dir) as tmp, torch.no_grad():
        for split in params.splits:
            table = ImageTable.from_manifest(degraded_dir, split)
            chunks = []
            for start in tqdm(range(0, len(table), params.batch_size), desc=f"embed {split}", unit="batch"):
                idx = list(range(start, min(start + params.batch_size, len(table))))
                chunks.append(adapter.understanding_features(table.pixels(idx, "understanding")).float())
            if not chunks:
                raise ValueError(f"split {split!r} has no images in {degraded_dir}; remove it from embed.splits")
            features = torch.cat(chunks)
            embedding_cache.write_split(tmp, split, features, table.ids(range(len(table))), key)
            summary["splits"][split] = list(features.shape)
    return summary
