"""Tests for the `embed` stage (reca.stages.embed): cache key invalidation, resume, and what `train` reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reca.data import embedding_cache as cache
from reca.data.dataset import ImageTable
from reca.data.transforms import to_pil
from reca.fileio import read_json
from reca.params import DegradeParams, EmbedParams, ModelParams
from reca.stages import degrade, embed
from reca_fixtures.models import build_tiny_adapter, tiny_pixels

N_UNLABELED = 7
PARAMS = EmbedParams(batch_size=2, shard_size=3, splits=["unlabeled", "heldout"])
MODEL = ModelParams(adapter="janus_ar")


def _degraded_dir(root: Path, blur_sigma: float = 0.0) -> Path:
    """A hand-written `degrade` output: 7 unlabeled + 2 heldout images at the tiny encoder's 16 px."""
    root.mkdir(parents=True, exist_ok=True)
    pixels = tiny_pixels(N_UNLABELED + 2, size=16, seed=3)
    rows = []
    for i, image in enumerate(pixels):
        split = "unlabeled" if i < N_UNLABELED else "heldout"
        rel = f"{split}/{i:02d}.png"
        for kind in ("understanding", "generation"):
            (root / kind / split).mkdir(parents=True, exist_ok=True)
            to_pil(image).save(root / kind / rel)
        rows.append({"id": rel, "split": split, "sha256": f"{i:064x}", "understanding": f"understanding/{rel}",
                     "generation": f"generation/{rel}"})
    (root / degrade.MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    record = degrade.settings_record(DegradeParams(understanding_size=16, generation_size=16, blur_sigma=blur_sigma))
    (root / degrade.RECORD).write_text(json.dumps(record), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """Two saved tiny models whose understanding encoders differ."""
    root = tmp_path_factory.mktemp("models")
    build_tiny_adapter(seed=0).save_pretrained(root / "a")
    build_tiny_adapter(seed=1).save_pretrained(root / "b")
    return root / "a", root / "b"


class _CountingFeatures:
    """Wraps embed's feature computation: counts shard computations, optionally stops after some."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.calls = 0
        self.stop_after = stop_after
        self.original = embed._features

    def __call__(self, *args, **kwargs):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        return self.original(*args, **kwargs)


_LOADED: dict[str, object] = {}
_load_model_dir = embed.load_model_dir


def _load_once(path, model):
    """embed's model loading, memoised: each test runs embed several times on the same saved models."""
    key = str(path)
    if key not in _LOADED:
        _LOADED[key] = _load_model_dir(path, model)
    return _LOADED[key]


def _run(monkeypatch, degraded: Path, model_dir: Path, out: Path, *, model: ModelParams = MODEL,
         params: EmbedParams = PARAMS, stop_after: int | None = None) -> tuple[dict | None, int]:
    counter = _CountingFeatures(stop_after)
    monkeypatch.setattr(embed, "_features", counter)
    monkeypatch.setattr(embed, "load_model_dir", _load_once)
    try:
        summary = embed.run(params, model, degraded, model_dir, out)
    except KeyboardInterrupt:
        summary = None
    monkeypatch.setattr(embed, "_features", counter.original)
    return summary, counter.calls


def test_cached_features_are_the_encoders_output_in_manifest_order(tmp_path: Path, model_dirs, monkeypatch) -> None:
    degraded, out = _degraded_dir(tmp_path / "degraded"), tmp_path / "emb"
    summary, calls = _run(monkeypatch, degraded, model_dirs[0], out)
    assert calls == 3 + 1  # ceil(7 / 3) unlabeled shards + 1 heldout shard
    assert summary["shards_computed"] == 4 and summary["splits"]["unlabeled"][0] == N_UNLABELED
    from reca.models.loading import load_model_dir

    adapter = load_model_dir(model_dirs[0], MODEL).eval()
    table = ImageTable.from_manifest(degraded, "unlabeled")
    # What `train` does: the key from the loaded model, the features in manifest order.
    key = cache.key_for(adapter, MODEL.revision, read_json(degraded / degrade.RECORD))
    assert key == summary["key"]
    features = cache.read_split(out, "unlabeled", key=key, ids=table.ids(range(len(table))))
    with torch.no_grad():
        live = adapter.understanding_features(table.pixels(range(len(table)), "understanding"))
    assert features.shape == live.shape
    assert torch.allclose(features, live, atol=1e-5)


def test_interrupted_run_resumes_with_the_missing_shards_only(tmp_path: Path, model_dirs, monkeypatch) -> None:
    degraded = _degraded_dir(tmp_path / "degraded")
    complete, _ = _run(monkeypatch, degraded, model_dirs[0], tmp_path / "complete")
    out = tmp_path / "emb"
    interrupted, calls = _run(monkeypatch, degraded, model_dirs[0], out, stop_after=2)
    assert interrupted is None and calls == 2
    assert not (out / cache.INDEX).exists()  # nothing reads a half-made cache
    assert len(list(out.glob("*.safetensors"))) == 2
    resumed, calls = _run(monkeypatch, degraded, model_dirs[0], out)
    assert calls == 2 and (resumed["shards_reused"], resumed["shards_computed"]) == (2, 2)
    ids = ImageTable.from_manifest(degraded, "unlabeled").ids(range(N_UNLABELED))
    assert torch.equal(cache.read_split(out, "unlabeled", key=resumed["key"], ids=ids),
                       cache.read_split(tmp_path / "complete", "unlabeled", key=complete["key"], ids=ids))
    again, calls = _run(monkeypatch, degraded, model_dirs[0], out)
    assert calls == 0 and again["shards_reused"] == 4


@pytest.mark.parametrize("change", ["encoder_weights", "revision", "degrade_settings"])
def test_a_changed_encoder_revision_or_degrade_setting_never_reuses_the_cache(
        tmp_path: Path, model_dirs, monkeypatch, change: str) -> None:
    degraded, out = _degraded_dir(tmp_path / "degraded"), tmp_path / "emb"
    first, _ = _run(monkeypatch, degraded, model_dirs[0], out)
    model_dir, model = model_dirs[0], MODEL
    if change == "encoder_weights":
        model_dir = model_dirs[1]
    elif change == "revision":
        model = MODEL.model_copy(update={"revision": "v2"})
    else:
        degraded = _degraded_dir(tmp_path / "degraded_blur", blur_sigma=1.0)
    second, calls = _run(monkeypatch, degraded, model_dir, out, model=model)
    assert second["key"] != first["key"]
    assert calls == 4 and second["shards_reused"] == 0
    ids = ImageTable.from_manifest(degraded, "unlabeled").ids(range(N_UNLABELED))
    with pytest.raises(cache.StaleCacheError):
        cache.read_split(out, "unlabeled", key=first["key"], ids=ids)
    assert cache.read_split(out, "unlabeled", key=second["key"], ids=ids).shape[0] == N_UNLABELED


def test_shards_that_no_longer_belong_are_removed(tmp_path: Path, model_dirs, monkeypatch) -> None:
    degraded, out = _degraded_dir(tmp_path / "degraded"), tmp_path / "emb"
    _run(monkeypatch, degraded, model_dirs[0], out)
    summary, calls = _run(monkeypatch, degraded, model_dirs[0], out,
                          params=PARAMS.model_copy(update={"shard_size": 10, "splits": ["unlabeled"]}))
    assert calls == 1 and summary["shards_removed"] == 3
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["unlabeled-00000.safetensors"]


def test_wrong_understanding_size_is_an_error_naming_the_fix(tmp_path: Path, model_dirs) -> None:
    degraded = _degraded_dir(tmp_path / "degraded")
    record = read_json(degraded / degrade.RECORD)
    (degraded / degrade.RECORD).write_text(json.dumps({**record, "understanding_size": 32}), encoding="utf-8")
    with pytest.raises(ValueError, match="understanding_size: 16"):
        embed.run(PARAMS, MODEL, degraded, model_dirs[0], tmp_path / "emb")


@pytest.mark.slow
def test_two_processes_write_the_one_process_cache_byte_for_byte(tmp_path: Path, model_dirs) -> None:
    import sys

    import yaml

    from reca_fixtures.tools import run_tool
    from reca_fixtures.tracking import fresh_mlflow_store

    degraded = _degraded_dir(tmp_path / "degraded")
    one, two = tmp_path / "one", tmp_path / "two"
    embed.run(PARAMS, MODEL, degraded, model_dirs[0], one)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"model": {"adapter": "janus_ar"},
                                      "embed": {**PARAMS.model_dump(), "processes": 2}}))
    fresh_mlflow_store(tmp_path)
    cmd = [Path(sys.executable).parent / "reca", "embed", "--params", params, "--degraded", degraded,
           "--model-dir", model_dirs[0], "--output", two]
    out = run_tool(cmd, tmp_path, timeout=240)
    assert "torch.distributed.run" in out.stderr and "--nproc_per_node=2" in out.stderr
    files = sorted(p.name for p in one.iterdir())
    assert files == sorted(p.name for p in two.iterdir()) and len(files) == 4 + 1  # 4 shards + index.json
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    # Resume under two processes: only the missing shard is computed again, by one rank.
    (two / "unlabeled-00001.safetensors").unlink()
    out = run_tool(cmd, tmp_path, timeout=240)
    assert "embed: 1 shards computed, 3 reused" in out.stderr
    assert all((one / name).read_bytes() == (two / name).read_bytes() for name in files)
