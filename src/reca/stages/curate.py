"""`curate`: decide which raw images are usable, and account for every one.

Input: a directory tree whose top-level folders are splits (``captioned/``,
``unlabeled/``, ``heldout/``), each optionally with a ``captions.jsonl`` of
``{"file": ..., "caption": ...}``. Output directory:

* ``manifest.jsonl``   one row per usable image (id, path, split, sha256, size, mode, caption)
* ``quarantine.jsonl`` one row per rejected image (path, reason, detail)
* ``duplicates.jsonl`` one row per exact duplicate (path, duplicate_of)
* ``report.json``      counts; inputs = curated + quarantined + duplicates

The input tree is only read, never modified.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from reca.data.images import IMAGE_EXTENSIONS, ImageRejected, decode_rgb, sha256_file
from reca.fileio import atomic_dir, read_jsonl, write_json, write_jsonl
from reca.params import CurateParams

MANIFEST = "manifest.jsonl"
QUARANTINE = "quarantine.jsonl"
DUPLICATES = "duplicates.jsonl"
REPORT = "report.json"


def _load_captions(split_dir: Path, caption_file: str) -> dict[str, str]:
    path = split_dir / caption_file
    if not path.exists():
        return {}
    captions = {}
    for row in read_jsonl(path):
        if "file" not in row or "caption" not in row:
            raise ValueError(f"{path}: every row needs 'file' and 'caption' keys, got {sorted(row)}")
        captions[str(row["file"])] = str(row["caption"])
    return captions


def _check(path: Path, params: CurateParams) -> dict[str, Any]:
    decoded = decode_rgb(path, max_pixels=params.max_pixels)
    w, h = decoded.image.size
    if min(w, h) < params.min_side:
        raise ImageRejected("too_small", f"{w}x{h}: shorter side below min_side {params.min_side}")
    if max(w, h) / min(w, h) > params.max_aspect_ratio:
        raise ImageRejected("extreme_aspect", f"{w}x{h}: aspect above max_aspect_ratio {params.max_aspect_ratio}")
    return {"width": w, "height": h, "mode": decoded.original_mode, "format": decoded.original_format}


def run(params: CurateParams, input_dir: str | Path, output_dir: str | Path) -> dict[str, Any]:
    """Curate ``input_dir`` into ``output_dir``; return the report."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: input directory not found (dvc pull, or point curate at your images)")
    files = sorted(p for p in input_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    captions = {s: _load_captions(input_dir / s, params.caption_file) for s in params.splits}
    manifest, quarantine, duplicates = [], [], []
    seen: dict[str, str] = {}
    for path in tqdm(files, desc="curate", unit="img", mininterval=1.0):
        rel = path.relative_to(input_dir).as_posix()
        split = rel.split("/", 1)[0] if "/" in rel else ""
        if split not in params.splits:
            quarantine.append({"path": rel, "reason": "unknown_split",
                               "detail": f"top-level folder {split!r} is not one of {params.splits}"})
            continue
        try:
            facts = _check(path, params)
        except ImageRejected as err:
            quarantine.append({"path": rel, "reason": err.reason, "detail": err.detail})
            continue
        in_split = path.relative_to(input_dir / split).as_posix()
        caption = captions[split].get(in_split)
        if split == "captioned" and caption is None:
            quarantine.append({"path": rel, "reason": "missing_caption",
                               "detail": f"no row for {in_split!r} in {split}/{params.caption_file}"})
            continue
        digest = sha256_file(path)
        if params.dedupe_exact and digest in seen:
            duplicates.append({"path": rel, "duplicate_of": seen[digest], "sha256": digest})
            continue
        seen[digest] = rel
        # The id keeps the extension: x.png and x.jpg side by side are two images.
        row = {"id": rel, "path": rel, "split": split, "sha256": digest, **facts}
        if caption is not None:
            row["caption"] = caption
        manifest.append(row)
    report = {
        "inputs": len(files),
        "curated": len(manifest),
        "quarantined": len(quarantine),
        "duplicates": len(duplicates),
        "per_split": dict(Counter(r["split"] for r in manifest)),
        "per_reason": dict(Counter(r["reason"] for r in quarantine)),
    }
    # Every input lands in exactly one of the three lists: nothing is silently dropped.
    assert report["curated"] + report["quarantined"] + report["duplicates"] == report["inputs"]
    with atomic_dir(output_dir) as tmp:
        write_jsonl(tmp / MANIFEST, manifest)
        write_jsonl(tmp / QUARANTINE, quarantine)
        write_jsonl(tmp / DUPLICATES, duplicates)
        write_json(tmp / REPORT, report)
    return report
