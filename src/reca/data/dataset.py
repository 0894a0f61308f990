"""Image tables over the `degrade` manifest, loaded lazily by index.

Stages pass manifests (paths), never Python objects; a table turns manifest
rows into tensors on demand, so memory does not grow with the data set.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from reca.data.transforms import array_to_tensor, to_tensor
from reca.fileio import read_jsonl
from reca.stage_files import DEGRADED_MANIFEST


def read_image_tensor(path: str | Path) -> torch.Tensor:
    """One image file as a float tensor (3, H, W) in [-1, 1], uncached."""
    with Image.open(path) as img:
        return to_tensor(img.convert("RGB"))


def read_pixels(root: str | Path, rows: Sequence[dict[str, Any]], kind: str) -> torch.Tensor:
    """Stack the ``kind`` copy of manifest ``rows`` without caching (for one pass over many images)."""
    return torch.stack([read_image_tensor(Path(root) / row[kind]) for row in rows])


class ImageTable:
    """Rows of one split of the degraded manifest, with tensor loading by index."""

    def __init__(self, root: str | Path, rows: Sequence[dict[str, Any]]) -> None:
        self.root = Path(root)
        self.rows = list(rows)

    @classmethod
    def from_manifest(cls, root: str | Path, split: str, *, require_caption: bool = False) -> ImageTable:
        """Load the rows of ``split`` from ``root/manifest.jsonl``."""
        path = Path(root) / DEGRADED_MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run `reca degrade` (dvc repro degrade) first")
        rows = [r for r in read_jsonl(path) if r["split"] == split]
        if require_caption:
            missing = [r["id"] for r in rows if not r.get("caption")]
            if missing:
                raise ValueError(f"{path}: {len(missing)} {split} rows have no caption (first: {missing[0]})")
        return cls(root, rows)

    def __len__(self) -> int:
        return len(self.rows)

    @functools.lru_cache(maxsize=16384)  # noqa: B019 - bounded; tables live for one stage
    def _load(self, rel: str) -> np.ndarray:
        # Kept as the file's 8-bit pixels: a quarter of the float tensor's memory.
        with Image.open(self.root / rel) as img:
            return np.asarray(img.convert("RGB"))

    def pixels(self, indices: Sequence[int], kind: str) -> torch.Tensor:
        """Stack the ``kind`` copy (``understanding`` or ``generation``) of the given rows, in [-1, 1]."""
        return torch.stack([array_to_tensor(self._load(self.rows[i][kind])) for i in indices])

    def captions(self, indices: Sequence[int]) -> list[str]:
        return [self.rows[i]["caption"] for i in indices]

    def ids(self, indices: Sequence[int]) -> list[str]:
        return [self.rows[i]["id"] for i in indices]
