"""Exact and near-duplicate bookkeeping for `curate`, in input order.

`curate` streams images in a deterministic order and asks, for each one that
passed every check, whether it repeats an image already kept. The first
occurrence is kept; later copies are recorded as duplicates of it:

* exact: the same bytes (SHA-256 of the file or tar member);
* near: perceptual hashes within ``max_bits`` of each other (Hamming) AND
  colour signatures within ``max_colour_diff`` (see
  :mod:`reca.data.perceptual_hash` for why colour is checked too).

Near-duplicate lookup is multi-index hashing, not an all-pairs scan: the
64-bit hash is cut into 4 bands of 16 bits; two hashes within ``t`` bits
agree within ``t // 4`` bits on at least one band (pigeonhole), so a query
probes each band's bucket and the buckets a few bit flips away. With
millions of images each query looks at a handful of candidates.

Memory grows by about 300 bytes per kept image (hashes, signatures, paths):
the indices are the only thing `curate` keeps per image.
"""

from __future__ import annotations

import itertools
from array import array
from dataclasses import dataclass

from reca.data.perceptual_hash import HASH_BITS, colour_distance, hamming

BANDS = 4
BAND_BITS = HASH_BITS // BANDS
_BAND_MASK = (1 << BAND_BITS) - 1
_SIGNATURE_BYTES = 192


@dataclass(frozen=True)
class Duplicate:
    """Why an image is not kept: which kept image it repeats, and how closely."""

    duplicate_of: str
    kind: str  # "exact" or "near"
    distance: int = 0  # Hamming bits between perceptual hashes (0 for exact)
    colour_diff: float = 0.0


def _flip_masks(bits: int, radius: int) -> list[int]:
    """Every ``bits``-wide mask with at most ``radius`` bits set (0 first)."""
    masks = [0]
    for r in range(1, radius + 1):
        for combo in itertools.combinations(range(bits), r):
            masks.append(sum(1 << b for b in combo))
    return masks


class NearDuplicateIndex:
    """Kept images' perceptual hashes and colour signatures, searchable by Hamming radius."""

    def __init__(self, max_bits: int, max_colour_diff: float) -> None:
        if not 0 <= max_bits < HASH_BITS:
            raise ValueError(f"max_bits must be in [0, {HASH_BITS}), got {max_bits}")
        self.max_bits = max_bits
        self.max_colour_diff = max_colour_diff
        self._probes = _flip_masks(BAND_BITS, max_bits // BANDS)
        self._buckets: list[dict[int, list[int]]] = [{} for _ in range(BANDS)]
        self._hashes = array("Q")
        self._signatures = bytearray()
        self._paths: list[str] = []

    def __len__(self) -> int:
        return len(self._paths)

    def _signature(self, entry: int) -> bytes:
        return bytes(self._signatures[entry * _SIGNATURE_BYTES:(entry + 1) * _SIGNATURE_BYTES])

    def find(self, value: int, signature: bytes) -> Duplicate | None:
        """The closest kept image that ``(value, signature)`` near-duplicates, or ``None``."""
        candidates: set[int] = set()
        for band, buckets in enumerate(self._buckets):
            key = (value >> (band * BAND_BITS)) & _BAND_MASK
            for mask in self._probes:
                candidates.update(buckets.get(key ^ mask, ()))
        best: tuple[int, float, int] | None = None
        for entry in candidates:
            bits = hamming(value, self._hashes[entry])
            if bits > self.max_bits:
                continue
            diff = colour_distance(signature, self._signature(entry))
            if diff <= self.max_colour_diff and (best is None or (bits, diff, entry) < best):
                best = (bits, diff, entry)
        if best is None:
            return None
        return Duplicate(duplicate_of=self._paths[best[2]], kind="near", distance=best[0],
                         colour_diff=round(best[1], 2))

    def add(self, value: int, signature: bytes, path: str) -> None:
        """Index a kept image."""
        if len(signature) != _SIGNATURE_BYTES:
            raise ValueError(f"colour signature must be {_SIGNATURE_BYTES} bytes, got {len(signature)}")
        entry = len(self._paths)
        self._hashes.append(value)
        self._signatures += signature
        self._paths.append(path)
        for band, buckets in enumerate(self._buckets):
            buckets.setdefault((value >> (band * BAND_BITS)) & _BAND_MASK, []).append(entry)


class Deduplicator:
    """Decides, image by image in input order, whether an image repeats one already kept."""

    def __init__(self, *, exact: bool, near: bool, max_bits: int, max_colour_diff: float) -> None:
        self.exact = exact
        self.near = near
        self._by_digest: dict[bytes, str] = {}
        self._near = NearDuplicateIndex(max_bits, max_colour_diff)

    def check(self, path: str, sha256: str, phash: int, signature: bytes) -> Duplicate | None:
        """Return the :class:`Duplicate` record for ``path``, or keep it (index it) and return ``None``."""
        digest = bytes.fromhex(sha256)
        if self.exact and digest in self._by_digest:
            return Duplicate(duplicate_of=self._by_digest[digest], kind="exact")
        if self.near:
            found = self._near.find(phash, signature)
            if found is not None:
                return found
            self._near.add(phash, signature, path)
        if self.exact:
            self._by_digest[digest] = path
        return None
