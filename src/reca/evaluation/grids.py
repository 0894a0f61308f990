"""Sample grids for `evaluate`: rows of images with a text label (and column names), as one PNG (no torchvision)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from reca.fileio import atomic_path


def image_grid(rows: Sequence[tuple[str, Sequence[Image.Image]]], *, scale: int = 3, label_width: int = 320,
               pad: int = 4, header: Sequence[str] = ()) -> Image.Image:
    """One row per (label, images); images are upscaled ``scale``x with nearest neighbour.

    ``header`` names the image columns (e.g. the models of a comparison) in a top row.
    """
    if not rows:
        raise ValueError("no rows to draw")
    cell = max(img.size[0] for _, imgs in rows for img in imgs) * scale
    cols = max(len(imgs) for _, imgs in rows)
    top = 16 if header else 0
    width = label_width + cols * (cell + pad) + pad
    height = top + len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(header):
        draw.text((label_width + pad + c * (cell + pad), 2), name[: max(cell // 6, 1)], fill=(0, 0, 0))
    for r, (label, imgs) in enumerate(rows):
        y = top + pad + r * (cell + pad)
        draw.text((pad, y + cell // 2 - 6), label[: label_width // 6], fill=(0, 0, 0))
        for c, img in enumerate(imgs):
            canvas.paste(img.resize((cell, cell), Image.Resampling.NEAREST), (label_width + pad + c * (cell + pad), y))
    return canvas


def save_grid(path: str | Path, rows: Sequence[tuple[str, Sequence[Image.Image]]], **kwargs: Any) -> Path:
    """Render :func:`image_grid` and write it atomically as PNG."""
    with atomic_path(path) as tmp:
        image_grid(rows, **kwargs).save(tmp, format="PNG")
    return Path(path)
