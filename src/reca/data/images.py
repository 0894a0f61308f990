"""Decoding user images into RGB safely, with a reason for every rejection.

Used by `curate` (which records rejections in its quarantine manifest) and by
`degrade` (which re-decodes only images `curate` accepted).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


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


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to RGB.

    Transparent pixels are composited over ``background`` (white by default),
    because dropping alpha would expose whatever colour the encoder left in
    fully transparent pixels, which is arbitrary and often black.
    """
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping at 255.
        import numpy as np

        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray((arr / peak * 255.0).round().astype("uint8"), mode="L").convert("RGB")
    return image.convert("RGB")


def decode_rgb(path: str | Path, max_pixels: int | None = None) -> DecodedImage:
    """Fully decode ``path`` to RGB with EXIF orientation applied.

    Raises:
        ImageRejected: with reason ``empty_file``, ``not_an_image``, ``decompression_bomb``
            or ``corrupt`` (truncated or undecodable data).
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise ImageRejected("empty_file", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                fmt = img.format
                w, h = img.size
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageRejected("decompression_bomb", f"{w}x{h} = {w * h} pixels > max_pixels {max_pixels}")
                img.seek(0)  # GIF/TIFF: first frame
                img.load()
                mode = img.mode
                oriented = ImageOps.exif_transpose(img)
                rgb = to_rgb(oriented)
                rgb.load()
    except ImageRejected:
        raise
    except UnidentifiedImageError as err:
        raise ImageRejected("not_an_image", str(err)) from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageRejected("decompression_bomb", str(err)) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageRejected("corrupt", f"{type(err).__name__}: {err}") from err
    return DecodedImage(image=rgb, original_mode=mode, original_format=fmt)
