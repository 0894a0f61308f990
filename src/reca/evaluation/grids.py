"""Sample grids for `evaluate`: rows of images with a text label (and column names), as one PNG (no torchvision)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from reca.fileio import atomic_path

#: PIL's default bitmap font: pixels per character and per line
CHAR_WIDTH = 6
LINE_HEIGHT = 11


def wrap(text: str, width: int) -> list[str]:
    """Words of ``text`` in lines of at most ``width`` characters (a longer word is cut)."""
    lines: list[str] = []
    for word in text.split():
        word = word[:width]
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def image_grid(rows: Sequence[tuple[str, Sequence[Image.Image]]], *, scale: int = 3, label_width: int = 320,
               pad: int = 4, header: Sequence[str] = ()) -> Image.Image:
    """One row per (label, images); images are upscaled ``scale``x with nearest neighbour.

    ``header`` names the image columns (the models of a comparison, or the
    prompts a row of samples answers) in a top row, each wrapped to its
    column's width so that a whole prompt can be read.
    """
    if not rows:
        raise ValueError("no rows to draw")
    cell = max(img.size[0] for _, imgs in rows for img in imgs) * scale
    cols = max(len(imgs) for _, imgs in rows)
    names = [wrap(name, max(cell // CHAR_WIDTH, 1)) for name in header]
    top = LINE_HEIGHT * max(len(lines) for lines in names) + 4 if names else 0
    width = label_width + cols * (cell + pad) + pad
    height = top + len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, lines in enumerate(names):
        for i, line in enumerate(lines):
            draw.text((label_width + pad + c * (cell + pad), 2 + i * LINE_HEIGHT), line, fill=(0, 0, 0))
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
