"""Tests for the understanding-feature cache (reca.data.embedding_cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reca.data.embedding_cache import INDEX, StaleCacheError, cache_key, read_split, write_split
from reca.fileio import read_json
from reca.params import DegradeParams

DEGRADE = DegradeParams(downup_factor=0.5).model_dump()
IDS = ["unlabeled/a", "unlabeled/b", "unlabeled/c"]


def _features(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 4, 8, generator=torch.Generator().manual_seed(seed))


def test_round_trip_returns_identical_features(tmp_path: Path) -> None:
    key = cache_key("janus_ar", "abc123", DEGRADE)
    feats = _features()
    write_split(tmp_path, "unlabeled", feats, IDS, key)
    got = read_split(tmp_path, "unlabeled", key=key, ids=IDS)
    assert got.dtype == feats.dtype
    assert torch.equal(got, feats)
    index = read_json(tmp_path / INDEX)
    assert index["key"] == key
    assert index["splits"]["unlabeled"] == {"ids": IDS, "shape": [3, 4, 8], "dtype": "torch.float32"}


def test_round_trip_of_non_contiguous_bfloat16(tmp_path: Path) -> None:
    feats = _features(3).to(torch.bfloat16).transpose(1, 2)
    assert not feats.is_contiguous()
    write_split(tmp_path, "heldout", feats, IDS, "k")
    assert torch.equal(read_split(tmp_path, "heldout", key="k", ids=IDS), feats)


def test_two_splits_share_one_index(tmp_path: Path) -> None:
    write_split(tmp_path, "unlabeled", _features(3, 0), IDS, "k")
    write_split(tmp_path, "heldout", _features(2, 1), ["heldout/x", "heldout/y"], "k")
    assert torch.equal(read_split(tmp_path, "unlabeled", key="k", ids=IDS), _features(3, 0))
    assert torch.equal(
        read_split(tmp_path, "heldout", key="k", ids=["heldout/x", "heldout/y"]), _features(2, 1)
    )


def test_different_key_is_stale_and_says_how_to_fix(tmp_path: Path) -> None:
    write_split(tmp_path, "unlabeled", _features(), IDS, "old-key")
    with pytest.raises(StaleCacheError) as info:
        read_split(tmp_path, "unlabeled", key="new-key", ids=IDS)
    assert "dvc repro embed" in str(info.value)
    assert "old-key" in str(info.value) and "new-key" in str(info.value)


def test_writing_with_a_new_key_drops_splits_of_the_old_key(tmp_path: Path) -> None:
    write_split(tmp_path, "heldout", _features(), IDS, "old")
    write_split(tmp_path, "unlabeled", _features(), IDS, "new")
    assert set(read_json(tmp_path / INDEX)["splits"]) == {"unlabeled"}
    with pytest.raises(KeyError, match="heldout"):
        read_split(tmp_path, "heldout", key="new", ids=IDS)


def test_ids_in_a_different_order_are_stale(tmp_path: Path) -> None:
    write_split(tmp_path, "unlabeled", _features(), IDS, "k")
    with pytest.raises(StaleCacheError):
        read_split(tmp_path, "unlabeled", key="k", ids=list(reversed(IDS)))
    with pytest.raises(StaleCacheError):
        read_split(tmp_path, "unlabeled", key="k", ids=IDS[:2])


def test_missing_index_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="reca embed"):
        read_split(tmp_path / "cache", "unlabeled", key="k", ids=IDS)


def test_uncached_split_raises_key_error(tmp_path: Path) -> None:
    write_split(tmp_path, "unlabeled", _features(), IDS, "k")
    with pytest.raises(KeyError, match="heldout"):
        read_split(tmp_path, "heldout", key="k", ids=IDS)


def test_cache_key_is_deterministic() -> None:
    assert cache_key("janus_ar", "fp", DEGRADE) == cache_key(
        "janus_ar", "fp", dict(reversed(DEGRADE.items()))
    )


def test_cache_key_changes_with_encoder_fingerprint_and_adapter() -> None:
    base = cache_key("janus_ar", "fp-1", DEGRADE)
    assert cache_key("janus_ar", "fp-2", DEGRADE) != base
    assert cache_key("other", "fp-1", DEGRADE) != base


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("understanding_size", 64),
        ("generation_size", 16),
        ("resize_mode", "pad"),
        ("blur_sigma", 0.5),
        ("downup_factor", 0.25),
    ],
)
def test_cache_key_changes_with_every_degrade_field(field: str, value) -> None:
    assert field in DEGRADE
    assert DEGRADE[field] != value
    changed = {**DEGRADE, field: value}
    assert cache_key("janus_ar", "fp", changed) != cache_key("janus_ar", "fp", DEGRADE)


def test_parametrized_fields_cover_all_degrade_params() -> None:
    # If DegradeParams grows a field, the test above must be extended to cover it.
    assert set(DEGRADE) == {
        "understanding_size",
        "generation_size",
        "resize_mode",
        "blur_sigma",
        "downup_factor",
    }
