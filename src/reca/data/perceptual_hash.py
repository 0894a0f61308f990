"""Perceptual fingerprints of images, for `curate`'s near-duplicate removal.

Two fingerprints per image, both computed from the decoded, EXIF-oriented RGB
image so that a re-encoded, resized or re-oriented copy fingerprints like its
original:

* a 64-bit DCT perceptual hash (pHash) of the luminance: the signs of the
  8x8 lowest spatial frequencies of a 32x32 thumbnail against their median.
  Re-compression, resizing and mild blur flip few bits; different pictures
  flip about half of them. Compared by Hamming distance.
* a colour signature: the 8x8 area-averaged RGB thumbnail. Luminance hashes
  are blind to hue, so a red circle and a blue circle at the same place hash
  alike; for RecA (whose largest gains are on colour attribution) those are
  different images, and the signature tells them apart.

Both are pure numpy/Pillow and cheap next to decoding the image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HASH_BITS = 64
HASH_HEX_DIGITS = HASH_BITS // 4
_DCT_SIDE = 32  # thumbnail side the DCT runs on
_LOW = 8  # keep the 8x8 lowest frequencies: 64 bits
SIGNATURE_SIDE = 8


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: ``D @ x`` is the DCT of the column vector ``x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    mat = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    mat[0] /= np.sqrt(2.0)
    return mat


_DCT = _dct_matrix(_DCT_SIDE)[:_LOW]  # only the rows of the low frequencies are ever used


def phash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash of ``image``'s luminance (any mode, any size)."""
    grey = image.convert("L").resize((_DCT_SIDE, _DCT_SIDE), Image.Resampling.BOX)
    low = _DCT @ np.asarray(grey, dtype=np.float64) @ _DCT.T  # (8, 8) lowest frequencies
    flat = low.ravel()
    # The DC term measures brightness, not structure: leave it out of the median.
    bits = flat > np.median(flat[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def colour_signature(image: Image.Image) -> bytes:
    """The 8x8 area-averaged RGB thumbnail, as 192 bytes."""
    return image.convert("RGB").resize((SIGNATURE_SIDE, SIGNATURE_SIDE), Image.Resampling.BOX).tobytes()


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return bin(a ^ b).count("1")


def colour_distance(a: bytes, b: bytes) -> float:
    """Largest mean absolute RGB difference (0-255) over the cells of two colour signatures.

    The maximum over cells, not the mean over the image: an object that
    changed colour covers only part of the picture, and averaging would hide it.
    """
    x = np.frombuffer(a, dtype=np.uint8).reshape(-1, 3).astype(np.int16)
    y = np.frombuffer(b, dtype=np.uint8).reshape(-1, 3).astype(np.int16)
    return float(np.abs(x - y).mean(axis=1).max())


def hash_to_hex(value: int) -> str:
    """Fixed-width lowercase hex (16 digits) of a 64-bit hash, as written in manifests."""
    return f"{value:0{HASH_HEX_DIGITS}x}"
