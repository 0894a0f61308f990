"""Decoding user images into RGB safely, with a reason for every rejection.

Used by `curate` (which records rejections in its quarantine manifest) and by
`degrade` (which re-decodes only images `curate` accepted). Both read through
:mod:`reca.data.sources`, so a "file" here is any binary stream: a file on
disk or a member of a tar shard.

Colour rules, applied after EXIF orientation:

* transparency (RGBA, LA, PA, palette with a transparent index) is
  composited over white, never dropped: a dropped alpha channel exposes
  whatever colour the encoder left in invisible pixels, often black;
* palette, greyscale, CMYK and YCbCr convert through Pillow;
* 16-bit greyscale is scaled to 8 bits (65535 -> 255), not clipped;
* animated GIF/WebP/PNG and multi-page TIFF give their first frame.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow plugins tried when identifying a file: the formats the pipeline supports.
# Restricting the list keeps exotic decoders (EPS runs Ghostscript) away from untrusted files.
OPENED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF")
# What Pillow may report having opened: its JPEG plugin names camera multi-picture files MPO.
SUPPORTED_FORMATS = (*OPENED_FORMATS, "MPO")
_EXIF_ORIENTATION = 0x0112


class ImageRejected(Exception):
    """An image cannot be used; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    """An image decoded to RGB plus facts about the original file."""

    image: Image.Image
    original_mode: str
    original_format: str | None
    orientation: int = 1  # EXIF orientation that was applied (1 = none)


def sha256_stream(fh: BinaryIO, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a binary stream from its current position to the end."""
    digest = hashlib.sha256()
    while block := fh.read(chunk):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    with Path(path).open("rb") as fh:
        return sha256_stream(fh, chunk)


def stream_size(fh: BinaryIO) -> int:
    """Bytes in a seekable stream (the position is restored)."""
    here = fh.tell()
    size = fh.seek(0, os.SEEK_END)
    fh.seek(here)
    return size


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to RGB, compositing transparency over ``background`` (white)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if image.mode.startswith("I;16") or image.mode == "I":
        arr = np.asarray(image, dtype=np.float64)
        # I;16 always spans 16 bits; plain 32-bit I is 16-bit data only when it exceeds 8 bits.
        peak = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray((arr / peak * 255.0).clip(0, 255).round().astype("uint8"), mode="L").convert("RGB")
    return image.convert("RGB")


@contextlib.contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """Switch off Pillow's process-wide bomb guard: ``max_pixels`` from params replaces it.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and refuses twice that; the
    user's ``curate.max_pixels`` must decide alone, in either direction.
    """
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def decode_rgb(source: str | Path | BinaryIO, max_pixels: int | None = None,
               draft_size: int | None = None) -> DecodedImage:
    """Fully decode an image file or stream to RGB, with EXIF orientation applied.

    Args:
        source: a path or a seekable binary stream positioned at the image's first byte.
        max_pixels: refuse images with more pixels than this, from the header, before decoding.
        draft_size: the caller needs no more than this many pixels on each side:
            JPEGs then decode at 1/2, 1/4 or 1/8 scale (DCT scaling, several
            times faster) while both sides stay at least this long.

    Raises:
        ImageRejected: with reason ``empty_file``, ``not_an_image``, ``decompression_bomb``
            or ``corrupt`` (truncated or undecodable data, unreadable EXIF).
    """
    if isinstance(source, (str, Path)):
        with Path(source).open("rb") as fh:
            return decode_rgb(fh, max_pixels, draft_size)
    if stream_size(source) - source.tell() == 0:
        raise ImageRejected("empty_file", "zero bytes")
    try:
        with _own_pixel_limit(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd metadata it can still decode
            with Image.open(source, formats=OPENED_FORMATS) as img:
                fmt = img.format
                w, h = img.size
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageRejected("decompression_bomb", f"{w}x{h} = {w * h} pixels > max_pixels {max_pixels}")
                img.seek(0)  # animations and multi-page files: the first frame
                if draft_size is not None and fmt == "JPEG":
                    img.draft(None, (draft_size, draft_size))
                img.load()
                mode = img.mode
                orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
                rgb = to_rgb(ImageOps.exif_transpose(img))
                rgb.load()
    except ImageRejected:
        raise
    except UnidentifiedImageError as err:
        raise ImageRejected(
            "not_an_image", f"not a {'/'.join(OPENED_FORMATS)} image ({err})"
        ) from err
    except Exception as err:  # noqa: BLE001 - Pillow's decoders raise many types on malformed data
        raise ImageRejected("corrupt", f"{type(err).__name__}: {err}") from err
    return DecodedImage(image=rgb, original_mode=mode, original_format=fmt, orientation=orientation)
