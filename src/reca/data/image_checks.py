"""What `curate` checks about one image: the per-item work its worker processes do.

:func:`inspect_item` reads one item through :mod:`reca.data.sources`, hashes
its bytes, decodes it (:mod:`reca.data.images`), applies the size and aspect
limits from ``params.yaml`` and fingerprints it for near-duplicate search.
It returns a small plain dict (never the decoded image), so results cross
process boundaries cheaply and memory stays flat however many images flow
through. Bad input never raises: it comes back as a rejection with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reca.data.images import ImageRejected, decode_rgb, sha256_stream, stream_size
from reca.data.perceptual_hash import colour_signature, hash_to_hex, phash
from reca.data.sources import SourceItem, SourceProblem, open_item


@dataclass(frozen=True)
class ImageLimits:
    """The acceptance limits of `curate` (picklable, for worker processes)."""

    min_side: int
    max_aspect_ratio: float
    max_pixels: int


def rejection(reason: str, detail: str) -> dict[str, Any]:
    """A result that sends the item to quarantine."""
    return {"ok": False, "reason": reason, "detail": detail}


def check_geometry(width: int, height: int, limits: ImageLimits) -> None:
    """Raise :class:`ImageRejected` when the size or aspect ratio is outside ``limits``."""
    if min(width, height) < limits.min_side:
        raise ImageRejected("too_small", f"{width}x{height}: shorter side below min_side {limits.min_side}")
    aspect = max(width, height) / min(width, height)
    if aspect > limits.max_aspect_ratio:
        raise ImageRejected(
            "extreme_aspect", f"{width}x{height}: aspect {aspect:.2f} above max_aspect_ratio {limits.max_aspect_ratio}"
        )


def inspect_item(root: str, limits: ImageLimits, item: SourceItem | SourceProblem) -> dict[str, Any]:
    """Check one item; return its facts (``ok: True``) or a rejection (``ok: False``)."""
    if isinstance(item, SourceProblem):
        return rejection(item.reason, item.detail)
    try:
        with open_item(root, item.path, item.offset, item.size) as fh:
            n_bytes = stream_size(fh)
            digest = sha256_stream(fh)
            fh.seek(0)
            decoded = decode_rgb(fh, max_pixels=limits.max_pixels)
    except ImageRejected as err:
        return rejection(err.reason, err.detail)
    except EOFError as err:  # a tar member cut short by a truncated shard
        return rejection("corrupt", f"{type(err).__name__}: {err}")
    except OSError as err:  # permissions, I/O errors, a file removed mid-run
        return rejection("unreadable", f"{type(err).__name__}: {err}")
    w, h = decoded.image.size
    try:
        check_geometry(w, h, limits)
    except ImageRejected as err:
        return rejection(err.reason, err.detail)
    return {
        "ok": True,
        "sha256": digest,
        "phash": hash_to_hex(phash(decoded.image)),
        "signature": colour_signature(decoded.image),
        "width": w,
        "height": h,
        "mode": decoded.original_mode,
        "format": decoded.original_format,
        "orientation": decoded.orientation,
        "bytes": n_bytes,
    }
