"""Tests for the sharded understanding-feature cache (reca.data.embedding_cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reca.data import embedding_cache as cache
from reca.fileio import read_json
from reca.params import DegradeParams
from reca.stages.degrade import settings_record

DEGRADE = settings_record(DegradeParams(downup_factor=0.5))
ROWS = [{"id": f"unlabeled/{i}.png", "sha256": f"{i:064x}"} for i in range(5)]
IDS = [r["id"] for r in ROWS]


def _features(n: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 4, 8, generator=torch.Generator().manual_seed(seed))


def _write(directory: Path, rows=ROWS, key: str = "k", dtype: str = "float32", shard_size: int = 2,
           feats: torch.Tensor | None = None) -> list[cache.Shard]:
    feats = _features(len(rows)) if feats is None else feats
    shards = cache.plan_shards("unlabeled", rows, shard_size)
    for s in shards:
        cache.write_shard(directory, s, feats[s.start:s.start + s.count], key, dtype)
    cache.write_index(directory, key, {"note": "test"}, dtype, {"unlabeled": shards}, {"unlabeled": [4, 8]})
    return shards


def test_shards_cover_the_split_in_order_and_read_back_exactly(tmp_path: Path) -> None:
    shards = _write(tmp_path)
    assert [(s.file, s.start, s.count) for s in shards] == [
        ("unlabeled-00000.safetensors", 0, 2), ("unlabeled-00001.safetensors", 2, 2),
        ("unlabeled-00002.safetensors", 4, 1)]
    assert torch.equal(cache.read_split(tmp_path, "unlabeled", key="k", ids=IDS), _features())
    index = read_json(tmp_path / cache.INDEX)
    assert index["key"] == "k" and index["splits"]["unlabeled"]["count"] == 5
    assert index["splits"]["unlabeled"]["feature_shape"] == [4, 8]
    assert cache.read_shard_shape(tmp_path, shards[0]) == (4, 8)


def test_storage_dtype_is_kept(tmp_path: Path) -> None:
    _write(tmp_path, dtype="bfloat16")
    got = cache.read_split(tmp_path, "unlabeled", key="k", ids=IDS)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, _features().to(torch.bfloat16))


def test_different_key_is_stale_and_says_how_to_fix(tmp_path: Path) -> None:
    _write(tmp_path, key="old-key")
    with pytest.raises(cache.StaleCacheError) as info:
        cache.read_split(tmp_path, "unlabeled", key="new-key", ids=IDS)
    assert "dvc repro embed" in str(info.value)
    assert "old-key" in str(info.value) and "new-key" in str(info.value)


def test_ids_in_another_order_or_number_are_stale(tmp_path: Path) -> None:
    _write(tmp_path)
    with pytest.raises(cache.StaleCacheError):
        cache.read_split(tmp_path, "unlabeled", key="k", ids=list(reversed(IDS)))
    with pytest.raises(cache.StaleCacheError):
        cache.read_split(tmp_path, "unlabeled", key="k", ids=IDS[:4])


def test_a_shard_overwritten_for_another_key_is_stale(tmp_path: Path) -> None:
    shards = _write(tmp_path)
    cache.write_shard(tmp_path, shards[1], _features(2, seed=9), "other", "float32")
    with pytest.raises(cache.StaleCacheError, match="unlabeled-00001"):
        cache.read_split(tmp_path, "unlabeled", key="k", ids=IDS)


def test_missing_index_and_uncached_split_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="reca embed"):
        cache.read_split(tmp_path / "cache", "unlabeled", key="k", ids=IDS)
    _write(tmp_path)
    with pytest.raises(KeyError, match="heldout"):
        cache.read_split(tmp_path, "heldout", key="k", ids=IDS)


def test_shard_is_current_only_for_the_same_key_rows_and_dtype(tmp_path: Path) -> None:
    shards = _write(tmp_path)
    assert all(cache.shard_is_current(tmp_path, s, "k", "float32") for s in shards)
    assert not cache.shard_is_current(tmp_path, shards[0], "other", "float32")
    assert not cache.shard_is_current(tmp_path, shards[0], "k", "bfloat16")
    changed = [dict(r) for r in ROWS]
    changed[1]["sha256"] = "f" * 64  # same id, new pixels
    replanned = cache.plan_shards("unlabeled", changed, 2)
    assert [cache.shard_is_current(tmp_path, s, "k", "float32") for s in replanned] == [False, True, True]
    (tmp_path / shards[2].file).write_bytes((tmp_path / shards[2].file).read_bytes()[:20])  # killed mid-write
    assert not cache.shard_is_current(tmp_path, shards[2], "k", "float32")


def test_write_shard_refuses_a_row_count_mismatch(tmp_path: Path) -> None:
    shard = cache.plan_shards("unlabeled", ROWS, 2)[0]
    with pytest.raises(ValueError, match="3 feature rows for 2 images"):
        cache.write_shard(tmp_path, shard, _features(3), "k", "float32")


def test_unlisted_shards_are_removed_and_other_files_kept(tmp_path: Path) -> None:
    shards = _write(tmp_path)
    (tmp_path / "notes.safetensors").write_bytes(b"user file")
    removed = cache.remove_unlisted_shards(tmp_path, {shards[0].file})
    assert removed == [shards[1].file, shards[2].file]
    assert (tmp_path / "notes.safetensors").exists() and (tmp_path / shards[0].file).exists()


def test_index_of_another_key_is_invalidated_before_new_shards_land(tmp_path: Path) -> None:
    _write(tmp_path, key="old")
    cache.invalidate_index(tmp_path, "old")
    assert (tmp_path / cache.INDEX).exists()
    cache.invalidate_index(tmp_path, "new")
    assert not (tmp_path / cache.INDEX).exists()


def test_cache_key_is_deterministic_and_covers_encoder_adapter_and_revision() -> None:
    base = cache.cache_key("janus_ar", "fp-1", None, DEGRADE)
    assert base == cache.cache_key("janus_ar", "fp-1", None, dict(reversed(DEGRADE.items())))
    assert cache.cache_key("janus_ar", "fp-2", None, DEGRADE) != base
    assert cache.cache_key("other", "fp-1", None, DEGRADE) != base
    assert cache.cache_key("janus_ar", "fp-1", "v2", DEGRADE) != base


@pytest.mark.parametrize(
    ("field", "value"),
    [("understanding_size", 64), ("generation_size", 16), ("resize_mode", "pad"), ("blur_sigma", 0.5),
     ("downup_factor", 0.25)],
)
def test_cache_key_changes_with_every_degrade_setting(field: str, value) -> None:
    assert DEGRADE[field] != value
    assert cache.cache_key("janus_ar", "fp", None, {**DEGRADE, field: value}) != cache.cache_key(
        "janus_ar", "fp", None, DEGRADE)


def test_parametrized_fields_cover_every_recorded_degrade_setting() -> None:
    # If degrade records a new setting, the test above must cover it.
    assert set(DEGRADE) == {"understanding_size", "generation_size", "resize_mode", "blur_sigma", "downup_factor"}


def test_a_shards_bytes_do_not_depend_on_the_process_that_wrote_it(tmp_path: Path) -> None:
    import json

    shards = _write(tmp_path / "a", dtype="bfloat16")
    _write(tmp_path / "b", dtype="bfloat16")
    raw = (tmp_path / "a" / shards[0].file).read_bytes()
    assert raw == (tmp_path / "b" / shards[0].file).read_bytes()
    # safetensors writes its header from a hash map, in an order that changes from process to process;
    # the cache writes it sorted, so one process and several write the same bytes.
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length], object_pairs_hook=lambda pairs: [k for k, _ in pairs])
    assert header == sorted(header) and length % 8 == 0
    metadata = json.loads(raw[8:8 + length])["__metadata__"]
    assert list(metadata) == sorted(metadata) and metadata["key"] == "k"
