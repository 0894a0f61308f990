"""Tests for the `curate` stage (reca.stages.curate): every reason to set an image aside, dedupe, accounting."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reca.data.deduplication import Deduplicator
from reca.data.expectations import ManifestValidationError
from reca.fileio import read_json, read_jsonl
from reca.params import CurateParams
from reca.stages import curate
from reca_fixtures.images import image_bytes, noise_image, save_image, scene_image, snapshot_tree, write_tar
from reca_fixtures.tracking import FakeTracker

BAD_CASES = {
    # path relative to raw/ -> expected quarantine reason
    "unlabeled/corrupt.png": "corrupt",
    "unlabeled/cut.jpg": "corrupt",
    "unlabeled/empty.png": "empty_file",
    "unlabeled/tiny.png": "too_small",
    "unlabeled/wide.png": "extreme_aspect",
    "unlabeled/text.png": "not_an_image",
    "unlabeled/eps.jpg": "not_an_image",
    "unlabeled/bomb.png": "decompression_bomb",
    "unlabeled/dangling.png": "unreadable",
    "extra/e.png": "unknown_split",
    "top.png": "unknown_split",
    "captioned/nocap.png": "missing_caption",
}
DUPLICATES = {
    # duplicate -> (kept file, kind); the first in input order (captioned < heldout < unlabeled) is kept
    "unlabeled/z_dup.png": ("unlabeled/u1.png", "exact"),
    "unlabeled/copy_of_a.png": ("captioned/a.png", "exact"),
    "unlabeled/scene_small.jpg": ("heldout/scene.png", "near"),
}
CURATED = ["captioned/a.png", "captioned/sub/b.png", "heldout/h.png", "heldout/scene.png", "unlabeled/u1.png",
           "unlabeled/u2.jpg"]
CAPTIONS = {"a.png": "a red circle", "sub/b.png": "two blue squares", "ghost.png": "never on disk"}
PARAMS = CurateParams(min_side=16, max_aspect_ratio=4.0, max_pixels=300 * 300, workers=1)


def _build_tree(raw: Path) -> None:
    save_image(raw, "captioned/a.png", noise_image(32, 32, 1))
    save_image(raw, "captioned/sub/b.png", noise_image(40, 24, 2))
    save_image(raw, "captioned/nocap.png", noise_image(32, 32, 3))
    (raw / "captioned" / "captions.jsonl").write_text(
        "".join(json.dumps({"file": f, "caption": c}) + "\n" for f, c in CAPTIONS.items()), encoding="utf-8"
    )
    save_image(raw, "unlabeled/u1.png", noise_image(32, 32, 4))
    save_image(raw, "unlabeled/u2.jpg", noise_image(32, 48, 5), quality=90)
    corrupt = save_image(raw, "unlabeled/corrupt.png", noise_image(64, 64, 6))
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 2])
    cut = save_image(raw, "unlabeled/cut.jpg", noise_image(64, 64, 6), quality=90)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (raw / "unlabeled" / "empty.png").write_bytes(b"")
    save_image(raw, "unlabeled/tiny.png", noise_image(8, 8, 7))
    save_image(raw, "unlabeled/wide.png", noise_image(100, 20, 8))
    (raw / "unlabeled" / "text.png").write_text("not an image", encoding="utf-8")
    # An EPS file named .jpg: Pillow could open it (through Ghostscript); curate must not try.
    (raw / "unlabeled" / "eps.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    save_image(raw, "unlabeled/bomb.png", Image.new("L", (400, 400)))  # 160k pixels > max_pixels 90k
    (raw / "unlabeled" / "dangling.png").symlink_to(raw / "unlabeled" / "deleted_since.png")
    (raw / "unlabeled" / "notes.txt").write_text("ignored: not an image extension", encoding="utf-8")
    shutil.copyfile(raw / "unlabeled" / "u1.png", raw / "unlabeled" / "z_dup.png")
    shutil.copyfile(raw / "captioned" / "a.png", raw / "unlabeled" / "copy_of_a.png")
    save_image(raw, "heldout/h.png", noise_image(32, 32, 9))
    save_image(raw, "heldout/scene.png", scene_image(128, seed=3))
    # A smaller, re-encoded copy of heldout/scene.png: different bytes, same picture.
    save_image(raw, "unlabeled/scene_small.jpg", scene_image(128, seed=3).resize((96, 96)), quality=80)
    save_image(raw, "extra/e.png", noise_image(32, 32, 10))
    save_image(raw, "top.png", noise_image(32, 32, 11))


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> tuple[Path, Path, dict, dict[str, bytes], FakeTracker]:
    root = tmp_path_factory.mktemp("curate")
    raw, out = root / "raw", root / "curated"
    _build_tree(raw)
    before = snapshot_tree(raw)
    tracker = FakeTracker()
    report = curate.run(PARAMS, raw, out, tracker)
    return raw, out, report, before, tracker


def test_every_bad_case_is_quarantined_with_its_reason(curated) -> None:
    _, out, _, _, _ = curated
    rows = read_jsonl(out / curate.QUARANTINE)
    assert {r["path"]: r["reason"] for r in rows} == BAD_CASES
    assert all(r["detail"] for r in rows)
    details = {r["path"]: r["detail"] for r in rows}
    assert "max_pixels 90000" in details["unlabeled/bomb.png"]
    assert "default_split" in details["top.png"]


def test_duplicates_name_the_kept_file_and_kind(curated) -> None:
    _, out, _, _, _ = curated
    rows = read_jsonl(out / curate.DUPLICATES)
    assert {r["path"]: (r["duplicate_of"], r["kind"]) for r in rows} == DUPLICATES
    near = next(r for r in rows if r["kind"] == "near")
    assert 0 <= near["distance"] <= PARAMS.near_duplicate_bits
    manifest_paths = {r["path"] for r in read_jsonl(out / curate.MANIFEST)}
    assert {kept for kept, _ in DUPLICATES.values()} <= manifest_paths
    assert not set(DUPLICATES) & manifest_paths


def test_manifest_rows_describe_the_usable_images(curated) -> None:
    raw, out, _, _, _ = curated
    rows = {r["path"]: r for r in read_jsonl(out / curate.MANIFEST)}
    assert sorted(rows) == CURATED
    b = rows["captioned/sub/b.png"]
    assert b["id"] == "captioned/sub/b.png"
    assert b["split"] == "captioned"
    assert b["caption"] == "two blue squares"
    assert (b["width"], b["height"]) == (40, 24)
    assert rows["captioned/a.png"]["caption"] == "a red circle"
    assert rows["unlabeled/u2.jpg"]["format"] == "JPEG"
    assert rows["unlabeled/u2.jpg"]["mode"] == "RGB"
    assert "caption" not in rows["unlabeled/u1.png"]
    for path, row in rows.items():
        assert row["sha256"] == hashlib.sha256((raw / path).read_bytes()).hexdigest()
        assert row["bytes"] == (raw / path).stat().st_size
        assert len(row["phash"]) == 16 and int(row["phash"], 16) >= 0


def test_report_accounts_for_every_input(curated) -> None:
    _, out, report, _, _ = curated
    written = read_json(out / curate.REPORT)
    assert {k: v for k, v in report.items() if k not in ("seconds", "images_per_s")} == written
    n_inputs = len(BAD_CASES) + len(DUPLICATES) + len(CURATED)
    assert report["inputs"] == n_inputs  # notes.txt and captions.jsonl are not inputs
    assert report["ignored_files"] == 2
    assert report["ignored_by_extension"] == {".jsonl": 1, ".txt": 1}
    assert (report["curated"], report["quarantined"], report["duplicates"]) == (
        len(CURATED), len(BAD_CASES), len(DUPLICATES))
    assert (report["duplicates_exact"], report["duplicates_near"]) == (2, 1)
    assert report["per_split"] == {"captioned": 2, "heldout": 2, "unlabeled": 2}
    assert report["per_reason"]["unknown_split"] == 2
    assert report["validation"] == {"success": True, "failed": []}
    assert read_json(out / curate.VALIDATION)["success"] is True


def test_counts_and_report_are_logged_to_mlflow(curated) -> None:
    _, _, report, _, tracker = curated
    assert tracker.metrics["inputs"] == report["inputs"]
    assert tracker.metrics["duplicates_near"] == 1
    assert tracker.metrics["quarantined.unknown_split"] == 2
    assert tracker.metrics["validation_success"] == 1
    assert tracker.metrics["images_per_s"] > 0
    assert {curate.REPORT, curate.VALIDATION, curate.QUARANTINE, curate.DUPLICATES} <= set(tracker.artifacts)


def test_input_tree_is_left_byte_identical(curated) -> None:
    raw, _, _, before, _ = curated
    assert snapshot_tree(raw) == before


def test_missing_input_raises_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_raw"
    with pytest.raises(FileNotFoundError, match="no_such_raw"):
        curate.run(PARAMS, missing, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dedupe_off_keeps_byte_identical_copies(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    save_image(raw, "unlabeled/a.png", noise_image(32, 32, 1))
    shutil.copyfile(raw / "unlabeled" / "a.png", raw / "unlabeled" / "b.png")
    off = PARAMS.model_copy(update={"dedupe_exact": False, "dedupe_near": False})
    report = curate.run(off, raw, tmp_path / "out")
    assert (report["curated"], report["duplicates"]) == (2, 0)
    report = curate.run(PARAMS, raw, tmp_path / "out2")
    assert (report["curated"], report["duplicates_exact"]) == (1, 1)


def test_near_duplicate_threshold_and_colour_come_from_params(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    scene = scene_image(96, seed=5)
    save_image(raw, "unlabeled/a.png", scene)
    save_image(raw, "unlabeled/b.jpg", scene.resize((80, 80)), quality=70)  # re-encoded, resized copy
    recoloured = Image.fromarray(np.asarray(scene)[..., ::-1].copy())  # same shapes, other colours
    save_image(raw, "unlabeled/c.png", recoloured)
    report = curate.run(PARAMS, raw, tmp_path / "near")
    assert report["duplicates_near"] == 1
    assert read_jsonl(tmp_path / "near" / curate.DUPLICATES)[0]["path"] == "unlabeled/b.jpg"
    strict = PARAMS.model_copy(update={"near_duplicate_colour_diff": 0.0})
    assert curate.run(strict, raw, tmp_path / "strict")["duplicates_near"] == 0
    loose = PARAMS.model_copy(update={"near_duplicate_colour_diff": 255.0})
    assert curate.run(loose, raw, tmp_path / "loose")["duplicates_near"] == 2


def test_caption_rows_without_required_keys_are_an_error(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    save_image(raw, "captioned/a.png", noise_image(32, 32, 1))
    (raw / "captioned" / "captions.jsonl").write_text(json.dumps({"file": "a.png"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="captions.jsonl"):
        curate.run(PARAMS, raw, tmp_path / "out")


def test_rerun_replaces_previous_output(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    save_image(raw, "unlabeled/a.png", noise_image(32, 32, 1))
    save_image(raw, "unlabeled/b.png", noise_image(32, 32, 2))
    curate.run(PARAMS, raw, out)
    (out / "stale.txt").write_text("left over", encoding="utf-8")
    (raw / "unlabeled" / "b.png").unlink()
    report = curate.run(PARAMS, raw, out)
    assert report["curated"] == 1
    assert [r["path"] for r in read_jsonl(out / curate.MANIFEST)] == ["unlabeled/a.png"]
    assert not (out / "stale.txt").exists()


def test_same_stem_different_extension_get_distinct_ids(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    save_image(raw, "unlabeled/x.png", noise_image(32, 32, 1))
    save_image(raw, "unlabeled/x.jpg", noise_image(32, 32, 2), quality=90)
    curate.run(PARAMS, raw, tmp_path / "out")
    ids = [r["id"] for r in read_jsonl(tmp_path / "out" / curate.MANIFEST)]
    assert len(ids) == len(set(ids)) == 2


def test_every_supported_format_and_mode_is_curated(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    base = noise_image(24, 20, 1)
    cases = {
        "a.jpg": (base, {"quality": 90}), "b.png": (base.convert("RGBA"), {}), "c.webp": (base, {"lossless": True}),
        "d.gif": (base.convert("P"), {}), "e.bmp": (base, {}), "f.tif": (base.convert("CMYK"), {}),
        "g.png": (base.convert("LA"), {}), "h.png": (Image.fromarray(np.full((20, 24), 4000, np.uint16)), {}),
        "i.tiff": (base.convert("L"), {}),
    }
    for name, (img, kwargs) in cases.items():
        save_image(raw / "unlabeled", name, img, **kwargs)
    report = curate.run(PARAMS.model_copy(update={"dedupe_near": False}), raw, tmp_path / "out")
    assert report["curated"] == len(cases), read_jsonl(tmp_path / "out" / curate.QUARANTINE)
    rows = {r["path"].split("/")[-1]: r for r in read_jsonl(tmp_path / "out" / curate.MANIFEST)}
    assert {r["format"] for r in rows.values()} == {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}
    assert rows["f.tif"]["mode"] == "CMYK" and rows["h.png"]["mode"].startswith("I")
    assert all((r["width"], r["height"]) == (24, 20) for r in rows.values())


def test_flat_folder_goes_to_default_split(tmp_path: Path) -> None:
    raw = tmp_path / "dump"
    save_image(raw, "0001.png", noise_image(32, 32, 1))
    save_image(raw, "batch2/0002.png", noise_image(32, 32, 2))
    report = curate.run(PARAMS.model_copy(update={"default_split": "unlabeled"}), raw, tmp_path / "out")
    assert report["per_split"] == {"unlabeled": 2}
    assert [r["id"] for r in read_jsonl(tmp_path / "out" / curate.MANIFEST)] == ["0001.png", "batch2/0002.png"]


def test_webdataset_shards_are_curated_member_by_member(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    good = image_bytes(noise_image(32, 32, 1))
    write_tar(raw / "captioned" / "shard-000.tar", {
        "k1.png": good, "k1.txt": b"a red circle",
        "k2.jpg": b"not a jpeg at all", "k2.txt": b"never used",
        "k3.png": image_bytes(noise_image(32, 32, 2)), "k3.json": json.dumps({"caption": "a blue square"}).encode(),
        "k4.png": good, "k4.txt": b"the same picture",  # byte-identical to k1
        "k5.png": image_bytes(noise_image(32, 32, 3)),  # no caption in a split that requires one
    })
    before = snapshot_tree(raw)
    report = curate.run(PARAMS, raw, tmp_path / "out")
    shard = "captioned/shard-000.tar::"
    rows = {r["path"]: r for r in read_jsonl(tmp_path / "out" / curate.MANIFEST)}
    assert sorted(rows) == [f"{shard}k1.png", f"{shard}k3.png"]
    assert rows[f"{shard}k1.png"]["caption"] == "a red circle"
    assert rows[f"{shard}k3.png"]["caption"] == "a blue square"
    assert rows[f"{shard}k1.png"]["sha256"] == hashlib.sha256(good).hexdigest()
    assert rows[f"{shard}k1.png"]["tar_size"] == len(good)
    quarantined = {r["path"]: r["reason"] for r in read_jsonl(tmp_path / "out" / curate.QUARANTINE)}
    assert quarantined == {f"{shard}k2.jpg": "not_an_image", f"{shard}k5.png": "missing_caption"}
    assert [r["duplicate_of"] for r in read_jsonl(tmp_path / "out" / curate.DUPLICATES)] == [f"{shard}k1.png"]
    assert report["inputs"] == 5
    assert snapshot_tree(raw) == before


def test_truncated_shard_keeps_its_whole_members_and_quarantines_the_rest(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    big = image_bytes(noise_image(64, 64, 2))
    shard = write_tar(raw / "unlabeled" / "s.tar", {"a.png": image_bytes(noise_image(32, 32, 1)), "b.png": big})
    with tarfile.open(shard) as tar:
        cut = tar.getmember("b.png").offset_data + len(big) // 2
    shard.write_bytes(shard.read_bytes()[:cut])  # a download that stopped inside b.png's data
    report = curate.run(PARAMS, raw, tmp_path / "out")
    reasons = {r["path"]: r["reason"] for r in read_jsonl(tmp_path / "out" / curate.QUARANTINE)}
    assert [r["path"] for r in read_jsonl(tmp_path / "out" / curate.MANIFEST)] == ["unlabeled/s.tar::a.png"]
    assert reasons == {"unlabeled/s.tar::b.png": "corrupt", "unlabeled/s.tar": "corrupt_shard"}
    assert report["inputs"] == 3
    assert report["curated"] + report["quarantined"] + report["duplicates"] == report["inputs"]


def test_list_file_input_with_missing_entries(tmp_path: Path) -> None:
    root = tmp_path / "collection"
    save_image(root, "unlabeled/a.png", noise_image(32, 32, 1))
    save_image(root, "elsewhere/b.png", noise_image(32, 32, 2))
    write_tar(root / "heldout" / "s.tar", {"c.png": image_bytes(noise_image(32, 32, 3))})
    listing = root / "images.txt"
    listing.write_text("# my images\nunlabeled/a.png\n\nelsewhere/b.png\nunlabeled/gone.png\nheldout/s.tar\n",
                       encoding="utf-8")
    report = curate.run(PARAMS.model_copy(update={"default_split": "unlabeled"}), listing, tmp_path / "out")
    rows = {r["path"]: r["split"] for r in read_jsonl(tmp_path / "out" / curate.MANIFEST)}
    assert rows == {"unlabeled/a.png": "unlabeled", "elsewhere/b.png": "unlabeled", "heldout/s.tar::c.png": "heldout"}
    quarantined = read_jsonl(tmp_path / "out" / curate.QUARANTINE)
    assert [(r["path"], r["reason"]) for r in quarantined] == [("unlabeled/gone.png", "missing_file")]
    assert "line 5" in quarantined[0]["detail"]
    assert report["inputs"] == 4


def test_worker_processes_give_the_same_outputs_as_one_process(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for i in range(70):
        save_image(raw, f"unlabeled/{i:03d}.png", noise_image(20, 20, i % 60))  # 10 exact duplicates
    save_image(raw, "unlabeled/bad.png", noise_image(4, 4, 1))
    one = curate.run(PARAMS, raw, tmp_path / "one")
    two = curate.run(PARAMS.model_copy(update={"workers": 2}), raw, tmp_path / "two")
    assert (one["curated"], one["duplicates"], one["quarantined"]) == (60, 10, 1)
    for name in (curate.MANIFEST, curate.QUARANTINE, curate.DUPLICATES, curate.REPORT):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert two["inputs"] == 71


def test_failed_expectations_fail_the_stage_and_keep_the_result(tmp_path: Path, monkeypatch) -> None:
    raw = tmp_path / "raw"
    save_image(raw, "unlabeled/a.png", noise_image(32, 32, 1))
    shutil.copyfile(raw / "unlabeled" / "a.png", raw / "unlabeled" / "b.png")
    # A dedupe bug lets a byte-identical copy into the manifest: the suite must catch it.
    monkeypatch.setattr(Deduplicator, "check", lambda self, *args: None)
    tracker = FakeTracker()
    with pytest.raises(ManifestValidationError, match="expect_column_values_to_be_unique") as info:
        curate.run(PARAMS, raw, tmp_path / "out", tracker)
    assert "validation.json" in str(info.value)
    validation = read_json(tmp_path / "out" / curate.VALIDATION)
    assert validation["success"] is False
    assert any("sha256" in failed for failed in validation["failed"])
    assert read_json(tmp_path / "out" / curate.REPORT)["validation"]["success"] is False
    assert tracker.metrics["validation_success"] == 0
    assert curate.VALIDATION in tracker.artifacts


def test_default_split_must_be_a_known_split() -> None:
    with pytest.raises(ValueError, match="default_split 'train' is not one of splits"):
        CurateParams(default_split="train")
