"""Tests for the `degrade` stage (reca.stages.degrade) and reca.data.transforms."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reca.data.degraded_copies import StaleCurationError, copy_name
from reca.data.images import decode_rgb
from reca.data.transforms import degrade as degrade_image
from reca.data.transforms import resize, resize_center_crop, resize_pad, to_pil, to_tensor
from reca.fileio import read_json, read_jsonl
from reca.params import CurateParams, DegradeParams
from reca.stages import curate, degrade
from reca_fixtures.images import image_bytes, noise_image, save_image, scene_image, write_tar

_noise = noise_image
_save = save_image
CURATE = CurateParams(workers=1)


@pytest.fixture(scope="module")
def _shared_tree(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("degrade")
    raw, cur = root / "raw", root / "curated"
    _save(raw, "captioned/a.png", _noise(48, 32, 1))
    _save(raw, "captioned/b.png", _noise(32, 40, 2))
    (raw / "captioned" / "captions.jsonl").write_text(
        json.dumps({"file": "a.png", "caption": "a red circle"})
        + "\n"
        + json.dumps({"file": "b.png", "caption": "a blue square"})
        + "\n",
        encoding="utf-8",
    )
    _save(raw, "unlabeled/u.png", _noise(40, 40, 3))
    _save(raw, "heldout/h.png", _noise(64, 32, 4))
    report = curate.run(CURATE, raw, cur)
    assert report["curated"] == 4
    return raw, cur


@pytest.fixture
def curated_tree(_shared_tree, tmp_path: Path) -> tuple[Path, Path]:
    """A raw tree and its curation, private to the test (tests may change either)."""
    raw, cur = tmp_path / "raw", tmp_path / "curated"
    shutil.copytree(_shared_tree[0], raw)
    shutil.copytree(_shared_tree[1], cur)
    return raw, cur


def _arr(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(np.int16)


def test_writes_both_copies_at_configured_sizes(tmp_path: Path, curated_tree) -> None:
    raw, cur = curated_tree
    out = tmp_path / "degraded"
    params = DegradeParams(workers=1, understanding_size=16, generation_size=24)
    summary = degrade.run(params, cur, raw, out)
    assert summary["images"] == 4
    rows = read_jsonl(out / degrade.MANIFEST)
    assert sorted(r["id"] for r in rows) == ["captioned/a.png", "captioned/b.png", "heldout/h.png", "unlabeled/u.png"]
    for row in rows:
        assert row["understanding"] == f"understanding/{row['id']}.png"
        assert row["generation"] == f"generation/{row['id']}.png"
        with Image.open(out / row["understanding"]) as und, Image.open(out / row["generation"]) as gen:
            assert und.format == gen.format == "PNG"
            assert und.size == (16, 16)
            assert gen.size == (24, 24)
            assert und.mode == gen.mode == "RGB"


def test_manifest_carries_captions_and_splits(tmp_path: Path, curated_tree) -> None:
    raw, cur = curated_tree
    out = tmp_path / "degraded"
    degrade.run(DegradeParams(workers=1), cur, raw, out)
    rows = {r["id"]: r for r in read_jsonl(out / degrade.MANIFEST)}
    assert rows["captioned/a.png"]["caption"] == "a red circle"
    assert rows["captioned/b.png"]["caption"] == "a blue square"
    assert "caption" not in rows["unlabeled/u.png"]
    assert {k: r["split"] for k, r in rows.items()} == {
        "captioned/a.png": "captioned",
        "captioned/b.png": "captioned",
        "heldout/h.png": "heldout",
        "unlabeled/u.png": "unlabeled",
    }


def test_record_equals_params(tmp_path: Path, curated_tree) -> None:
    raw, cur = curated_tree
    out = tmp_path / "degraded"
    params = DegradeParams(
        workers=1, understanding_size=16, generation_size=32, resize_mode="pad", blur_sigma=0.7, downup_factor=0.5
    )
    summary = degrade.run(params, cur, raw, out)
    record = read_json(out / degrade.RECORD)
    # Everything that decides the pixels, and nothing that does not (workers).
    assert record == params.model_dump(exclude={"workers"})
    assert DegradeParams.model_validate({**record, "workers": params.workers}) == params
    assert {k: summary[k] for k in record} == record


@pytest.mark.parametrize(("blur_sigma", "downup_factor"), [(0.0, 0.5), (1.0, 1.0), (0.8, 0.5)])
def test_degradation_changes_understanding_copy_only(
    tmp_path: Path, curated_tree, blur_sigma: float, downup_factor: float
) -> None:
    raw, cur = curated_tree
    plain, degraded = tmp_path / "plain", tmp_path / "degraded"
    degrade.run(DegradeParams(workers=1), cur, raw, plain)
    degrade.run(DegradeParams(workers=1, blur_sigma=blur_sigma, downup_factor=downup_factor), cur, raw, degraded)
    for row in read_jsonl(plain / degrade.MANIFEST):
        # The generation target is untouched by the degradation settings...
        assert np.array_equal(_arr(plain / row["generation"]), _arr(degraded / row["generation"]))
        # ...while the understanding copy loses detail.
        diff = np.abs(_arr(plain / row["understanding"]) - _arr(degraded / row["understanding"]))
        assert diff.mean() > 5


def test_plain_copies_equal_a_plain_resize_of_the_decoded_original(tmp_path: Path, curated_tree) -> None:
    raw, cur = curated_tree
    out = tmp_path / "degraded"
    params = DegradeParams(workers=1, understanding_size=16, generation_size=24, resize_mode="center_crop")
    degrade.run(params, cur, raw, out)
    for row in read_jsonl(out / degrade.MANIFEST):
        original = decode_rgb(raw / row["id"]).image
        expected_gen = np.asarray(resize(original, 24, "center_crop")).astype(np.int16)
        expected_und = np.asarray(resize(original, 16, "center_crop")).astype(np.int16)
        assert np.array_equal(_arr(out / row["generation"]), expected_gen)
        assert np.array_equal(_arr(out / row["understanding"]), expected_und)


def test_missing_curated_manifest_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="reca curate"):
        degrade.run(DegradeParams(workers=1), tmp_path / "nothing", tmp_path / "raw", tmp_path / "out")


def test_reads_images_inside_tar_shards_through_the_source(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    picture = noise_image(40, 40, 7)
    write_tar(raw / "unlabeled" / "shard-000.tar", {"x/k1.png": image_bytes(picture)})
    curate.run(CURATE, raw, tmp_path / "curated")
    out = tmp_path / "degraded"
    degrade.run(DegradeParams(workers=1, understanding_size=16, generation_size=20), tmp_path / "curated", raw, out)
    (row,) = read_jsonl(out / degrade.MANIFEST)
    assert row["id"] == row["source"] == "unlabeled/shard-000.tar::x/k1.png"
    assert row["generation"] == "generation/unlabeled/shard-000.tar/x/k1.png.png"
    assert np.array_equal(_arr(out / row["generation"]), np.asarray(resize(picture, 20, "center_crop")))
    assert np.array_equal(_arr(out / row["understanding"]), np.asarray(resize(picture, 16, "center_crop")))


def test_raw_image_changed_since_curate_is_an_error_naming_it(tmp_path: Path, curated_tree) -> None:
    raw, cur = curated_tree
    _save(raw, "unlabeled/u.png", _noise(40, 40, 99))
    with pytest.raises(StaleCurationError, match="u.png.*rerun curate"):
        degrade.run(DegradeParams(workers=1), cur, raw, tmp_path / "degraded")
    assert not (tmp_path / "degraded").exists()


def test_refuses_a_curation_that_failed_its_expectations(tmp_path: Path, curated_tree) -> None:
    raw, cur = curated_tree
    report = read_json(cur / curate.REPORT)
    report["validation"] = {"success": False, "failed": ["manifest: expect_column_values_to_be_unique"]}
    (cur / curate.REPORT).write_text(json.dumps(report), encoding="utf-8")
    with pytest.raises(StaleCurationError, match="validation.json"):
        degrade.run(DegradeParams(workers=1), cur, raw, tmp_path / "degraded")


def test_worker_processes_write_identical_copies_and_manifest(tmp_path: Path, curated_tree) -> None:
    raw, cur = curated_tree
    params = DegradeParams(workers=1, understanding_size=16, generation_size=24, blur_sigma=0.5)
    degrade.run(params, cur, raw, tmp_path / "one")
    degrade.run(params.model_copy(update={"workers": 2}), cur, raw, tmp_path / "two")
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) == 2 * 4 + 2
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()


def test_large_jpeg_decodes_at_reduced_scale_close_to_a_full_decode(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    picture = scene_image(512, seed=2)
    _save(raw, "unlabeled/big.jpg", picture, quality=92)
    curate.run(CURATE, raw, tmp_path / "curated")
    out = tmp_path / "degraded"
    degrade.run(DegradeParams(workers=1, understanding_size=32, generation_size=64), tmp_path / "curated", raw, out)
    (row,) = read_jsonl(out / degrade.MANIFEST)
    full = np.asarray(resize(decode_rgb(raw / "unlabeled/big.jpg").image, 64, "center_crop")).astype(np.int16)
    assert np.abs(_arr(out / row["generation"]) - full).mean() < 3


@pytest.mark.parametrize(
    ("item_id", "expected"),
    [
        ("unlabeled/a.png", "unlabeled/a.png.png"),
        ("unlabeled/s.tar::k/1.jpg", "unlabeled/s.tar/k/1.jpg.png"),
        ("/abs/x.jpg", None),
        ("../up/x.jpg", None),
        ("a//b.png", None),
    ],
)
def test_copy_names_stay_inside_the_output_folder(item_id: str, expected: str | None) -> None:
    name = copy_name(item_id)
    if expected is not None:
        assert name == expected
    else:
        assert name.startswith("_external/") and ".." not in name.split("/") and not name.startswith("/")
        assert name != copy_name(item_id + "x")


# ---------------------------------------------------------------- transforms


@pytest.mark.parametrize("size", [(60, 30), (30, 60), (33, 17), (16, 16), (8, 5)])
def test_resize_center_crop_gives_square_of_size(size: tuple[int, int]) -> None:
    out = resize_center_crop(_noise(*size, seed=0), 16)
    assert out.size == (16, 16)


def test_resize_center_crop_keeps_the_centre() -> None:
    # 60x20: left and right thirds red, middle third green; shorter side is already 20.
    img = Image.new("RGB", (60, 20), (255, 0, 0))
    img.paste((0, 255, 0), (20, 0, 40, 20))
    out = np.asarray(resize_center_crop(img, 20))
    assert (out == [0, 255, 0]).all()


@pytest.mark.parametrize("size", [(60, 30), (30, 60), (33, 17), (16, 16)])
def test_resize_pad_gives_square_of_size(size: tuple[int, int]) -> None:
    assert resize_pad(_noise(*size, seed=0), 16).size == (16, 16)


def test_resize_pad_fills_borders_and_centres_content() -> None:
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    out = np.asarray(resize_pad(img, 20, fill=(10, 20, 30)))
    # Scaled to 20x10, pasted at y=5..15.
    assert (out[:5] == [10, 20, 30]).all()
    assert (out[15:] == [10, 20, 30]).all()
    assert (out[5:15] == [255, 255, 255]).all()
    tall = np.asarray(resize_pad(Image.new("RGB", (20, 40), (255, 255, 255)), 20))
    assert (tall[:, :5] == 0).all() and (tall[:, 15:] == 0).all()
    assert (tall[:, 5:15] == 255).all()


def test_resize_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="stretch"):
        resize(_noise(8, 8, 0), 8, "stretch")


def test_degrade_keeps_size_and_is_identity_when_off() -> None:
    img = _noise(20, 12, 0)
    same = degrade_image(img, blur_sigma=0.0, downup_factor=1.0)
    assert np.array_equal(np.asarray(same), np.asarray(img))
    changed = degrade_image(img, blur_sigma=1.0, downup_factor=0.5)
    assert changed.size == (20, 12)
    assert not np.array_equal(np.asarray(changed), np.asarray(img))


def test_to_tensor_to_pil_round_trip() -> None:
    img = _noise(12, 8, 3)
    t = to_tensor(img)
    assert t.shape == (3, 8, 12)
    assert t.min() >= -1 and t.max() <= 1
    assert torch.isclose(
        t[:, 0, 0], torch.tensor(np.asarray(img)[0, 0] / 127.5 - 1, dtype=torch.float32)
    ).all()
    assert np.array_equal(np.asarray(to_pil(t)), np.asarray(img))
