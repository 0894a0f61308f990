"""On-disk cache of understanding-encoder features (the input of ``h_v``).

One safetensors file per split plus ``index.json``. The cache key is the
encoder's weight fingerprint plus the `degrade` settings the images were made
with: a changed encoder or degradation never silently reuses stale features.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from reca.fileio import atomic_path, read_json, write_json

INDEX = "index.json"


class StaleCacheError(RuntimeError):
    """The cache was made with another encoder, other degrade settings, or other images."""


def cache_key(adapter_name: str, encoder_fingerprint: str, degrade_record: dict[str, Any]) -> str:
    """A short hash identifying what the features depend on."""
    blob = json.dumps({"adapter": adapter_name, "encoder": encoder_fingerprint, "degrade": degrade_record},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_split(directory: str | Path, split: str, features: torch.Tensor, ids: list[str], key: str) -> None:
    """Atomically write one split's features and update the index."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / f"{split}.safetensors") as tmp:
        save_file({"features": features.contiguous()}, str(tmp), metadata={"key": key})
    index_path = directory / INDEX
    index = read_json(index_path) if index_path.exists() else {"key": key, "splits": {}}
    if index["key"] != key:
        index = {"key": key, "splits": {}}
    index["splits"][split] = {"ids": ids, "shape": list(features.shape), "dtype": str(features.dtype)}
    write_json(index_path, index)


def read_split(directory: str | Path, split: str, *, key: str, ids: list[str]) -> torch.Tensor:
    """Load one split's features, checking the key and that rows match ``ids`` in order."""
    directory = Path(directory)
    index_path = directory / INDEX
    if not index_path.exists():
        raise FileNotFoundError(f"{index_path} not found: run `reca embed` (dvc repro embed) first")
    index = read_json(index_path)
    if index["key"] != key:
        raise StaleCacheError(
            f"{directory}: embedding cache key {index['key']} != {key} (the encoder weights or the degrade "
            "settings changed); rerun `dvc repro embed`"
        )
    entry = index["splits"].get(split)
    if entry is None:
        raise KeyError(f"{directory}: split {split!r} not cached; add it to embed.splits")
    if entry["ids"] != ids:
        raise StaleCacheError(f"{directory}: cached {split} images differ from the degrade manifest; rerun embed")
    return load_file(str(directory / f"{split}.safetensors"))["features"]
