"""The two copies `degrade` writes for each curated image: the per-item work of its workers.

* the understanding copy, from which ``h_v`` is computed: resized to the
  encoder's input side, then down-up scaled and/or Gaussian-blurred;
* the generation copy, the reconstruction target: resized to the generation
  side the same way, never degraded.

Kept free of heavy imports (no torch, no pydantic): worker processes start
by importing this module.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from reca.data.images import decode_rgb, sha256_stream
from reca.data.sources import TAR_SEPARATOR, open_item
from reca.data.transforms import degrade, resize

# Fast lossless PNG: these are intermediate files, and zlib level 6 costs about four times the CPU
# of level 1 with run-length matching, for files only a few per cent smaller.
PNG_OPTIONS = {"format": "PNG", "compress_level": 1, "compress_type": zlib.Z_RLE}


class StaleCurationError(RuntimeError):
    """The raw images no longer match the curated manifest, or curation failed its checks."""


@dataclass(frozen=True)
class CopySettings:
    """How both copies are made (the pixel-determining fields of ``DegradeParams``)."""

    understanding_size: int
    generation_size: int
    resize_mode: str
    blur_sigma: float
    downup_factor: float


def copy_name(item_id: str) -> str:
    """File name (relative to a kind folder) of an image's copies: its id, made safe as a path.

    ``::`` of a shard member becomes a folder (a shard is a file, so no real
    folder can share its name); ids that are absolute or contain ``..``, empty
    or backslash segments could escape the output folder or collide, so they
    go under ``_external/<hash of the id>/``.
    """
    name = item_id.replace(TAR_SEPARATOR, "/")
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        digest = hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:32]
        base = parts[-1] if parts[-1] not in ("", ".", "..") else "image"
        name = f"_external/{digest}/{base}"
    return f"{name}.png"


def make_copies(settings: CopySettings, image: Image.Image) -> dict[str, Image.Image]:
    """The understanding and generation copies of one decoded RGB image."""
    understanding = degrade(resize(image, settings.understanding_size, settings.resize_mode),
                            blur_sigma=settings.blur_sigma, downup_factor=settings.downup_factor)
    return {"understanding": understanding,
            "generation": resize(image, settings.generation_size, settings.resize_mode)}


def write_copies(root: str, out_dir: str, settings: CopySettings, row: dict[str, Any]) -> dict[str, Any]:
    """Read one curated image (a manifest row), write both copies under ``out_dir``; return its degraded row.

    Raises:
        StaleCurationError: the image's bytes differ from the SHA-256 `curate` recorded.
    """
    with open_item(root, row["path"], row.get("tar_offset"), row.get("tar_size")) as fh:
        if "sha256" in row and sha256_stream(fh) != row["sha256"]:
            raise StaleCurationError(
                f"{Path(root) / row['path']}: content changed since `curate` (sha256 differs); rerun curate "
                "(dvc repro curate) on the current images"
            )
        fh.seek(0)
        image = decode_rgb(fh, draft_size=max(settings.understanding_size, settings.generation_size)).image
    name = copy_name(row["id"])
    out = {"id": row["id"], "split": row["split"], "source": row["path"]}
    for kind, copy in make_copies(settings, image).items():
        rel = f"{kind}/{name}"
        target = Path(out_dir) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        copy.save(target, **PNG_OPTIONS)
        out[kind] = rel
    for key in ("sha256", "caption"):
        if key in row:
            out[key] = row[key]
    return out
