"""On-disk cache of understanding-encoder features (the input of ``h_v``): sharded, keyed, resumable.

Layout of the cache directory::

    index.json                      key, what it was made from, and each split's shards
    <split>-00000.safetensors       features of images [0, shard_size) of the split, in manifest order
    <split>-00001.safetensors       ...

The **key** hashes everything the features depend on: the adapter, a
fingerprint of the encoder's weights, the model revision and the `degrade`
settings. Each shard carries, in its safetensors metadata, the key, its
position, its storage dtype and two digests: of the image ids it covers
(what readers check) and of the ids with their content hashes (what a rerun
checks before reusing it). Shards are written atomically one at a time, so a
killed `embed` leaves only complete shards behind, and a rerun recomputes
only the shards that are missing or no longer match.

A shard's bytes are a function of its features and metadata alone (the
header's keys are written sorted), so the same cache made twice, by one
process or by several, is the same files byte for byte.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from reca.fileio import atomic_path, read_json, write_json
from reca.safetensors_writer import write_safetensors
from reca.stage_files import EMBEDDING_INDEX as INDEX

FORMAT_VERSION = 2
_SHARD_FILE = re.compile(r"^(?P<split>.+)-(?P<number>\d{5})\.safetensors$")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class StaleCacheError(RuntimeError):
    """The cache was made with another encoder, other degrade settings, or other images."""


def cache_key(adapter_name: str, encoder_fingerprint: str, revision: str | None,
              degrade_record: dict[str, Any]) -> str:
    """A short hash identifying what the features depend on."""
    blob = json.dumps({"adapter": adapter_name, "encoder": encoder_fingerprint, "revision": revision,
                       "degrade": degrade_record}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def key_for(adapter: Any, revision: str | None, degrade_record: dict[str, Any]) -> str:
    """The cache key of ``adapter`` (a :class:`~reca.models.base.UMMAdapter`) on images made per ``degrade_record``."""
    return cache_key(adapter.name, adapter.encoder_fingerprint(), revision, degrade_record)


def ids_digest(ids: Sequence[str]) -> str:
    """Order-sensitive digest of image ids."""
    digest = hashlib.sha256()
    for item in ids:
        digest.update(item.encode("utf-8") + b"\0")
    return digest.hexdigest()[:32]


def rows_digest(rows: Sequence[dict[str, Any]]) -> str:
    """Order-sensitive digest of (id, content hash) pairs: changes when an image's pixels change."""
    return ids_digest([f"{r['id']}\t{r.get('sha256', '')}\t{r.get('understanding', '')}" for r in rows])


@dataclass(frozen=True)
class Shard:
    """One planned shard of a split: which rows it covers and what they digest to."""

    split: str
    number: int
    start: int
    count: int
    ids_digest: str
    rows_digest: str

    @property
    def file(self) -> str:
        return f"{self.split}-{self.number:05d}.safetensors"


def plan_shards(split: str, rows: Sequence[dict[str, Any]], shard_size: int) -> list[Shard]:
    """Cut a split's manifest rows, in order, into shards of ``shard_size`` rows."""
    shards = []
    for number, start in enumerate(range(0, len(rows), shard_size)):
        part = rows[start:start + shard_size]
        shards.append(Shard(split, number, start, len(part), ids_digest([r["id"] for r in part]), rows_digest(part)))
    return shards


def _metadata(path: Path) -> dict[str, str] | None:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except (OSError, SafetensorError):  # missing, truncated or not safetensors
        return None


def shard_is_current(directory: str | Path, shard: Shard, key: str, dtype: str) -> bool:
    """Whether ``shard``'s file exists, is complete, and was made for exactly this key, rows and dtype."""
    meta = _metadata(Path(directory) / shard.file)
    if meta is None:
        return False
    expected = {"key": key, "dtype": dtype, "start": str(shard.start), "count": str(shard.count),
                "rows_digest": shard.rows_digest}
    return all(meta.get(k) == v for k, v in expected.items())


def write_shard(directory: str | Path, shard: Shard, features: torch.Tensor, key: str, dtype: str) -> None:
    """Atomically write one shard's features (stored as ``dtype``) with its metadata."""
    if features.shape[0] != shard.count:
        raise ValueError(f"{shard.file}: {features.shape[0]} feature rows for {shard.count} images")
    meta = {"key": key, "dtype": dtype, "split": shard.split, "start": str(shard.start), "count": str(shard.count),
            "ids_digest": shard.ids_digest, "rows_digest": shard.rows_digest}
    with atomic_path(Path(directory) / shard.file) as tmp:
        # the header sorted: the same features and metadata are the same bytes in any process
        write_safetensors({"features": features.to(DTYPES[dtype])}, tmp, meta)


def read_shard_shape(directory: str | Path, shard: Shard) -> tuple[int, ...]:
    """Per-image feature shape stored in a shard, read from its header."""
    with safe_open(str(Path(directory) / shard.file), framework="pt") as fh:
        return tuple(fh.get_slice("features").get_shape()[1:])


def write_index(directory: str | Path, key: str, key_parts: dict[str, Any], dtype: str,
                splits: dict[str, list[Shard]], feature_shape: dict[str, list[int]]) -> None:
    """Atomically write ``index.json`` for a finished cache."""
    index = {
        "format": FORMAT_VERSION,
        "key": key,
        "made_from": key_parts,
        "dtype": dtype,
        "splits": {
            split: {"count": sum(s.count for s in shards), "feature_shape": feature_shape.get(split, []),
                    "ids_digest": ids_digest([s.ids_digest for s in shards]),
                    "shards": [asdict(s) for s in shards]}
            for split, shards in splits.items()
        },
    }
    write_json(Path(directory) / INDEX, index)


def remove_unlisted_shards(directory: str | Path, keep: set[str]) -> list[str]:
    """Delete shard files not in ``keep`` (other keys, splits or sizes); return their names."""
    removed = []
    for path in sorted(Path(directory).glob("*.safetensors")):
        if _SHARD_FILE.match(path.name) and path.name not in keep:
            path.unlink()
            removed.append(path.name)
    return removed


def invalidate_index(directory: str | Path, key: str) -> None:
    """Remove an index made for another key, before shards of the new key overwrite its files."""
    path = Path(directory) / INDEX
    if path.exists() and read_json(path).get("key") != key:
        path.unlink()


class CachedSplit:
    """One split's features, read row by row from its memory-mapped shards.

    Training reads a batch of rows per step; holding the split in memory
    instead would cost rows x tokens x width (about 4.7 MB an image for
    Janus-Pro's 576 x 2048 features in fp32, gigabytes for a data set) on
    every rank. Only the rows asked for are copied out of the page cache.
    """

    def __init__(self, handles: Sequence[Any], starts: Sequence[int], count: int) -> None:
        self._handles = list(handles)
        self._starts = list(starts)
        self._count = count
        first = self._handles[0].get_slice("features")
        self._row_shape = tuple(first.get_shape()[1:])

    def __len__(self) -> int:
        return self._count

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self._count, *self._row_shape))

    def __getitem__(self, rows: int | Sequence[int]) -> torch.Tensor:
        """The features of one row, or of several stacked in the order given."""
        if isinstance(rows, int):
            return self._row(rows)
        return torch.stack([self._row(int(i)) for i in rows])

    def _row(self, i: int) -> torch.Tensor:
        if not 0 <= i < self._count:
            raise IndexError(f"row {i} of a cached split of {self._count}")
        s = bisect.bisect_right(self._starts, i) - 1
        offset = i - self._starts[s]
        return self._handles[s].get_slice("features")[offset:offset + 1][0]

    def read_all(self) -> torch.Tensor:
        """The whole split as one tensor (small caches, tests)."""
        return torch.cat([h.get_tensor("features") for h in self._handles])


def open_split(directory: str | Path, split: str, *, key: str, ids: list[str]) -> CachedSplit:
    """Open one split's features for reading, checking the key and that rows match ``ids`` in order.

    Raises:
        FileNotFoundError: no index (embed never finished here).
        StaleCacheError: another key, other images or another order; or a shard overwritten since.
        KeyError: the split was not cached.
    """
    directory = Path(directory)
    index_path = directory / INDEX
    if not index_path.exists():
        raise FileNotFoundError(f"{index_path} not found: run `reca embed` (dvc repro embed) first")
    index = read_json(index_path)
    if index.get("key") != key:
        raise StaleCacheError(
            f"{directory}: embedding cache key {index.get('key')} != {key} (the encoder weights, the model "
            "revision or the degrade settings changed); rerun `dvc repro embed`"
        )
    entry = index["splits"].get(split)
    if entry is None:
        raise KeyError(f"{directory}: split {split!r} not cached; add it to embed.splits")
    shards = [Shard(**s) for s in entry["shards"]]
    if entry["count"] != len(ids) or [s.ids_digest for s in shards] != [
        ids_digest(ids[s.start:s.start + s.count]) for s in shards
    ]:
        raise StaleCacheError(f"{directory}: cached {split} images ({entry['count']}) differ from the degrade "
                              f"manifest's ({len(ids)}) or are in another order; rerun `dvc repro embed`")
    if not shards:
        raise StaleCacheError(f"{directory}: split {split!r} has no cached images")
    handles = []
    for shard in shards:
        handle = safe_open(str(directory / shard.file), framework="pt")
        if (handle.metadata() or {}).get("key") != key:
            raise StaleCacheError(f"{directory / shard.file}: written for another key; rerun `dvc repro embed`")
        handles.append(handle)
    return CachedSplit(handles, [s.start for s in shards], entry["count"])


def read_split(directory: str | Path, split: str, *, key: str, ids: list[str]) -> torch.Tensor:
    """One split's features as a single tensor (checked as :func:`open_split` checks them)."""
    return open_split(directory, split, key=key, ids=ids).read_all()
