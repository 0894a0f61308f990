"""Tests for the `curate` stage (reca.stages.curate)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reca.fileio import read_json, read_jsonl
from reca.params import CurateParams
from reca.stages import curate

BAD_CASES = {
    # path relative to raw/ -> expected quarantine reason
    "unlabeled/corrupt.png": "corrupt",
    "unlabeled/empty.png": "empty_file",
    "unlabeled/tiny.png": "too_small",
    "unlabeled/wide.png": "extreme_aspect",
    "unlabeled/text.png": "not_an_image",
    "extra/e.png": "unknown_split",
    "top.png": "unknown_split",
    "captioned/nocap.png": "missing_caption",
}
DUPLICATES = {
    # duplicate -> kept file (first by sorted path)
    "unlabeled/z_dup.png": "unlabeled/u1.png",
    "unlabeled/copy_of_a.png": "captioned/a.png",
}
CURATED = ["captioned/a.png", "captioned/sub/b.png", "heldout/h.png", "unlabeled/u1.png", "unlabeled/u2.jpg"]
CAPTIONS = {"a.png": "a red circle", "sub/b.png": "two blue squares", "ghost.png": "never on disk"}


def _noise(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")


def _save(root: Path, rel: str, image: Image.Image, **kwargs) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def _build_tree(raw: Path) -> None:
    _save(raw, "captioned/a.png", _noise(32, 32, 1))
    _save(raw, "captioned/sub/b.png", _noise(40, 24, 2))
    _save(raw, "captioned/nocap.png", _noise(32, 32, 3))
    (raw / "captioned" / "captions.jsonl").write_text(
        "".join(json.dumps({"file": f, "caption": c}) + "\n" for f, c in CAPTIONS.items()), encoding="utf-8"
    )
    _save(raw, "unlabeled/u1.png", _noise(32, 32, 4))
    _save(raw, "unlabeled/u2.jpg", _noise(32, 48, 5), quality=90)
    corrupt = _save(raw, "unlabeled/corrupt.png", _noise(64, 64, 6))
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 2])
    (raw / "unlabeled" / "empty.png").write_bytes(b"")
    _save(raw, "unlabeled/tiny.png", _noise(8, 8, 7))
    _save(raw, "unlabeled/wide.png", _noise(100, 20, 8))
    (raw / "unlabeled" / "text.png").write_text("not an image", encoding="utf-8")
    (raw / "unlabeled" / "notes.txt").write_text("ignored: not an image extension", encoding="utf-8")
    shutil.copyfile(raw / "unlabeled" / "u1.png", raw / "unlabeled" / "z_dup.png")
    shutil.copyfile(raw / "captioned" / "a.png", raw / "unlabeled" / "copy_of_a.png")
    _save(raw, "heldout/h.png", _noise(32, 32, 9))
    _save(raw, "extra/e.png", _noise(32, 32, 10))
    _save(raw, "top.png", _noise(32, 32, 11))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def curated(tmp_path: Path) -> tuple[Path, Path, dict, dict[str, bytes]]:
    raw, out = tmp_path / "raw", tmp_path / "curated"
    _build_tree(raw)
    before = _snapshot(raw)
    report = curate.run(CurateParams(min_side=16, max_aspect_ratio=4.0), raw, out)
    return raw, out, report, before


def test_every_bad_case_is_quarantined_with_its_reason(curated) -> None:
    _, out, _, _ = curated
    rows = read_jsonl(out / curate.QUARANTINE)
    got = {r["path"]: r["reason"] for r in rows}
    assert got == BAD_CASES
    assert all(r["detail"] for r in rows)


def test_duplicates_name_the_kept_file(curated) -> None:
    _, out, _, _ = curated
    rows = read_jsonl(out / curate.DUPLICATES)
    assert {r["path"]: r["duplicate_of"] for r in rows} == DUPLICATES
    manifest_paths = {r["path"] for r in read_jsonl(out / curate.MANIFEST)}
    assert set(DUPLICATES.values()) <= manifest_paths
    assert not set(DUPLICATES) & manifest_paths


def test_manifest_rows_describe_the_usable_images(curated) -> None:
    raw, out, _, _ = curated
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
    assert "caption" not in rows["heldout/h.png"]
    for path, row in rows.items():
        assert row["sha256"] == hashlib.sha256((raw / path).read_bytes()).hexdigest()


def test_report_accounts_for_every_input(curated) -> None:
    _, out, report, _ = curated
    assert report == read_json(out / curate.REPORT)
    n_inputs = len(BAD_CASES) + len(DUPLICATES) + len(CURATED)
    assert report["inputs"] == n_inputs  # notes.txt and captions.jsonl are not inputs
    assert report["curated"] == len(CURATED)
    assert report["quarantined"] == len(BAD_CASES)
    assert report["duplicates"] == len(DUPLICATES)
    assert report["curated"] + report["quarantined"] + report["duplicates"] == report["inputs"]
    assert report["per_split"] == {"captioned": 2, "heldout": 1, "unlabeled": 2}
    assert report["per_reason"]["unknown_split"] == 2
    assert sum(report["per_reason"].values()) == report["quarantined"]


def test_input_tree_is_left_byte_identical(curated) -> None:
    raw, _, _, before = curated
    assert _snapshot(raw) == before


def test_missing_input_dir_raises_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_raw"
    with pytest.raises(FileNotFoundError, match="no_such_raw"):
        curate.run(CurateParams(), missing, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dedupe_off_keeps_byte_identical_copies(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _save(raw, "unlabeled/a.png", _noise(32, 32, 1))
    shutil.copyfile(raw / "unlabeled" / "a.png", raw / "unlabeled" / "b.png")
    report = curate.run(CurateParams(dedupe_exact=False), raw, tmp_path / "out")
    assert report["curated"] == 2
    assert report["duplicates"] == 0
    report = curate.run(CurateParams(dedupe_exact=True), raw, tmp_path / "out2")
    assert (report["curated"], report["duplicates"]) == (1, 1)


def test_caption_rows_without_required_keys_are_an_error(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _save(raw, "captioned/a.png", _noise(32, 32, 1))
    (raw / "captioned" / "captions.jsonl").write_text(json.dumps({"file": "a.png"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="captions.jsonl"):
        curate.run(CurateParams(), raw, tmp_path / "out")


def test_rerun_replaces_previous_output(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    _save(raw, "unlabeled/a.png", _noise(32, 32, 1))
    _save(raw, "unlabeled/b.png", _noise(32, 32, 2))
    curate.run(CurateParams(), raw, out)
    (out / "stale.txt").write_text("left over", encoding="utf-8")
    (raw / "unlabeled" / "b.png").unlink()
    report = curate.run(CurateParams(), raw, out)
    assert report["curated"] == 1
    assert [r["path"] for r in read_jsonl(out / curate.MANIFEST)] == ["unlabeled/a.png"]
    assert not (out / "stale.txt").exists()


def test_same_stem_different_extension_get_distinct_ids(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _save(raw, "unlabeled/x.png", _noise(32, 32, 1))
    _save(raw, "unlabeled/x.jpg", _noise(32, 32, 2), quality=90)
    curate.run(CurateParams(), raw, tmp_path / "out")
    ids = [r["id"] for r in read_jsonl(tmp_path / "out" / curate.MANIFEST)]
    assert len(ids) == 2
    assert len(set(ids)) == 2
