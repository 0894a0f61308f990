"""Tiny model configurations and images shared by the tests (importable: pytest pythonpath)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 64,
    "vision_hidden_size": 32,
    "vision_layers": 1,
    "vision_heads": 2,
    "image_size": 16,
    "vision_patch_size": 8,
    "codebook_size": 64,
    "token_patch_size": 4,
}
TEXTS = [
    "a red circle",
    "a blue square left of a yellow triangle",
    "describe the image in detail .",
    "write a short caption for this image .",
]


def tiny_pixels(n: int = 8, size: int = 16, seed: int = 0):
    """Flat-coloured blocks: few distinct patches, so a small codebook is exact."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 3, size, size), 0.0)
    for i in range(n):
        colour = torch.rand(3, 1, 1, generator=g) * 2 - 1
        s = int(torch.randint(0, size // 2, (1,), generator=g))
        x[i, :, s : s + size // 2, s : s + size // 2] = colour
    return x


class MemoryTable:
    """An in-memory stand-in for :class:`reca.data.dataset.ImageTable` (same three methods)."""

    def __init__(self, pixels, captions=None):
        self.x = pixels
        self.rows = [{"id": str(i), "caption": (captions or TEXTS[:2])[i % len(captions or TEXTS[:2])]}
                     for i in range(len(pixels))]

    def __len__(self):
        return len(self.rows)

    def pixels(self, indices, kind):
        return self.x[list(indices)]

    def captions(self, indices):
        return [self.rows[i]["caption"] for i in indices]

    def ids(self, indices):
        return [self.rows[i]["id"] for i in indices]


def build_tiny_adapter(seed: int = 0, image_tokenizer: str = "patch_kmeans"):
    from reca.models.janus_ar import JanusARAdapter, TinyJanusParams

    return JanusARAdapter.build_from_scratch(TinyJanusParams(**TINY, kmeans_iters=3), texts=TEXTS,
                                             images=tiny_pixels(16), seed=seed, image_tokenizer=image_tokenizer)
