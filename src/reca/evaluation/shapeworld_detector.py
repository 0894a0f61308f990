"""Exact object detector for ShapeWorld images.

Used to score images produced by a model (text-to-image outputs and
reconstructions). Because ShapeWorld scenes are flat palette colours on a grey
background, detection is done without any learned component:

1. every pixel is assigned to its nearest palette colour (or to background);
2. same-colour pixels are grouped into 4-connected components;
3. each large enough component is matched against the exact shape templates
   that :mod:`reca.data.shapeworld` renders with; components that resemble no
   shape well enough are dropped, which keeps noise from being reported as
   objects.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from reca.data.shapeworld import BACKGROUND, COLOURS, SHAPES, Scene, shape_mask


@dataclass
class Detection:
    """One detected object.

    Attributes:
        shape: Best-matching shape name.
        colour: Palette colour name of the component.
        bbox: ``(x0, y0, x1, y1)`` of the component, inclusive-exclusive.
        centroid: ``(x, y)`` mean pixel-centre position (pixel ``i`` spans
            ``[i, i + 1)``, so this is comparable to ``SceneObject.cx/cy``).
        area: Number of pixels in the component.
        score: IoU with the best shape template, in ``[0, 1]``.
    """

    shape: str
    colour: str
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area: int
    score: float


def _to_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) array, got shape {array.shape}")
    return array[:, :, :3].astype(np.float32)


def segment(
    image: Image.Image | np.ndarray,
    *,
    colours: Mapping[str, tuple[int, int, int]] = COLOURS,
    max_distance: float = 80.0,
) -> np.ndarray:
    """Label every pixel with its nearest palette colour.

    Args:
        image: RGB image, or an ``(H, W, 3)`` array on the 0-255 scale.
        colours: Palette mapping colour names to RGB.
        max_distance: Pixels further than this (Euclidean RGB) from every
            palette entry and from the background count as background.

    Returns:
        An ``(H, W)`` int array: 0 for background, ``k + 1`` for the k-th
        colour of ``colours``.
    """
    pixels = _to_array(image)
    palette = np.array([BACKGROUND, *colours.values()], dtype=np.float32)
    distances = np.linalg.norm(pixels[:, :, None, :] - palette[None, None, :, :], axis=-1)
    labels = distances.argmin(axis=-1)
    labels[distances.min(axis=-1) > max_distance] = 0
    return labels


def _components(labels: np.ndarray) -> list[list[tuple[int, int]]]:
    """Group equal non-zero labels into 4-connected components (iterative flood fill)."""
    height, width = labels.shape
    grid = labels.tolist()
    seen = [[False] * width for _ in range(height)]
    components: list[list[tuple[int, int]]] = []
    for y in range(height):
        for x in range(width):
            value = grid[y][x]
            if value == 0 or seen[y][x]:
                continue
            seen[y][x] = True
            stack = [(y, x)]
            pixels: list[tuple[int, int]] = []
            while stack:
                cy, cx = stack.pop()
                pixels.append((cy, cx))
                for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                    if 0 <= ny < height and 0 <= nx < width and not seen[ny][nx] and grid[ny][nx] == value:
                        seen[ny][nx] = True
                        stack.append((ny, nx))
            components.append(pixels)
    return components


def _overlap_iou(mask: np.ndarray, template: np.ndarray, ox: int, oy: int) -> float:
    """IoU of ``mask`` with ``template`` placed at offset ``(ox, oy)`` in mask coordinates."""
    h, w = mask.shape
    size = template.shape[0]
    x_lo, x_hi = max(0, ox), min(w, ox + size)
    y_lo, y_hi = max(0, oy), min(h, oy + size)
    inter = 0
    if x_lo < x_hi and y_lo < y_hi:
        inter = int(
            np.count_nonzero(
                mask[y_lo:y_hi, x_lo:x_hi] & template[y_lo - oy : y_hi - oy, x_lo - ox : x_hi - ox]
            )
        )
    union = int(np.count_nonzero(mask)) + int(np.count_nonzero(template)) - inter
    return inter / union if union else 0.0


def _best_shape(mask: np.ndarray, shapes: Sequence[str]) -> tuple[str, float]:
    h, w = mask.shape
    # Renders use square boxes, but noise or a clipped edge can make the
    # component's box a pixel off in either direction, so try nearby sizes
    # around both sides and nearby placements around the centred one.
    sizes = sorted({s for side in (w, h) for s in (side - 1, side, side + 1) if s >= 2})
    best_shape, best_iou = shapes[0], -1.0
    for shape in shapes:
        for size in sizes:
            template = shape_mask(shape, size)
            base_x, base_y = (w - size) // 2, (h - size) // 2
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    iou = _overlap_iou(mask, template, base_x + dx, base_y + dy)
                    if iou > best_iou:
                        best_shape, best_iou = shape, iou
    return best_shape, max(best_iou, 0.0)


def detect(
    image: Image.Image | np.ndarray,
    *,
    colours: Mapping[str, tuple[int, int, int]] = COLOURS,
    shapes: Sequence[str] = SHAPES,
    min_area: int = 20,
    min_score: float = 0.6,
    max_distance: float = 80.0,
) -> list[Detection]:
    """Detect the flat-coloured shapes in a ShapeWorld image.

    Args:
        image: RGB image, or an ``(H, W, 3)`` array on the 0-255 scale.
        colours: Palette mapping colour names to RGB.
        shapes: Shape names to match against.
        min_area: Components with fewer pixels are ignored.
        min_score: Components whose best template IoU is below this are not
            reported; this is what rejects noise blobs.
        max_distance: Pixels further than this from every palette entry count
            as background.

    Returns:
        Detections sorted by area, largest first.
    """
    if not shapes:
        raise ValueError("need at least one shape")
    labels = segment(image, colours=colours, max_distance=max_distance)
    names = list(colours)
    detections: list[Detection] = []
    for pixels in _components(labels):
        if len(pixels) < min_area:
            continue
        ys = np.fromiter((p[0] for p in pixels), dtype=np.int64, count=len(pixels))
        xs = np.fromiter((p[1] for p in pixels), dtype=np.int64, count=len(pixels))
        x0, x1 = int(xs.min()), int(xs.max()) + 1
        y0, y1 = int(ys.min()), int(ys.max()) + 1
        mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        mask[ys - y0, xs - x0] = True
        shape, score = _best_shape(mask, shapes)
        if score < min_score:
            continue
        detections.append(
            Detection(
                shape=shape,
                colour=names[int(labels[ys[0], xs[0]]) - 1],
                bbox=(x0, y0, x1, y1),
                centroid=(float(xs.mean()) + 0.5, float(ys.mean()) + 0.5),
                area=len(pixels),
                score=score,
            )
        )
    detections.sort(key=lambda d: d.area, reverse=True)
    return detections


def agreement_with_ground_truth(scene: Scene, detections: Sequence[Detection]) -> bool:
    """Check that detections describe exactly the objects of a scene.

    Args:
        scene: The ground-truth scene.
        detections: Output of :func:`detect` on an image of the scene.

    Returns:
        True if the multiset of detected ``(shape, colour)`` pairs equals the
        scene's and, for scenes with several objects, the left-to-right order
        of detections (by centroid x) matches the scene's order.
    """
    truth = [(obj.shape, obj.colour) for obj in scene.ordered()]
    found = [(d.shape, d.colour) for d in sorted(detections, key=lambda d: d.centroid[0])]
    if Counter(truth) != Counter(found):
        return False
    return len(truth) < 2 or truth == found
