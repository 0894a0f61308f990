"""Exact object detector and colour classifier for ShapeWorld images (colour segmentation, shape classification).

Used by the GenEval scorer (:class:`ShapeWorldDetector` and
:class:`PaletteColourClassifier`, which the ``evaluate`` stage plugs in) to read
images a model generated for the default world. Because ShapeWorld scenes are
flat palette colours on a grey background, detection needs no learned part:

1. every pixel is assigned to its nearest palette colour (or to background);
2. same-colour pixels are grouped into 4-connected components;
3. each large enough component is matched against the exact shape templates
   that :mod:`reca.shapeworld.world` renders with; its confidence is the IoU
   with the best template, and components that resemble no shape well enough
   are dropped, which keeps noise from being reported as objects.

On rendered scenes it reproduces the generator's ground truth (shape, colour,
box) exactly: :func:`agreement_with_ground_truth` checks that. The colour of
a detected object is the majority of its pixels' nearest palette colours.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image

from reca.evaluation.geneval import Detection
from reca.shapeworld.world import BACKGROUND, COLOURS, PALETTE, SHAPES, Scene, shape_mask
from reca.vocabulary import GENEVAL_COLOURS

#: template IoU below which a component is not reported as an object (see ``detect``)
MIN_SCORE = 0.8


@dataclass
class ShapeDetection:
    """One detected object.

    Attributes:
        shape: Best-matching shape name.
        colour: Palette colour name of the component.
        bbox: ``(x0, y0, x1, y1)`` of the component, inclusive-exclusive.
        centroid: ``(x, y)`` mean pixel-centre position (pixel ``i`` spans
            ``[i, i + 1)``, so this is comparable to ``SceneObject.cx/cy``).
        area: Number of pixels in the component.
        score: IoU with the best shape template, in ``[0, 1]``.
        mask: Boolean mask of the component over the whole image ``(H, W)``.
    """

    shape: str
    colour: str
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area: int
    score: float
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


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


@lru_cache(maxsize=4096)
def _candidates(h: int, w: int, shapes: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Every template placement tried for an ``h`` x ``w`` component, clipped to its box.

    Renders use square boxes, but noise or a clipped edge can make the
    component's box a pixel off in either direction, so nearby sizes around
    both sides and nearby placements around the centred one are tried.

    Returns:
        The shape of each candidate, their clipped masks ``(K, h * w)`` as
        float32, and the full template areas ``(K,)`` (pixels outside the box
        still count towards the union).
    """
    sizes = sorted({s for side in (w, h) for s in (side - 1, side, side + 1) if s >= 2})
    names, clipped, areas = [], [], []
    for shape in shapes:
        for size in sizes:
            template = shape_mask(shape, size)
            base_x, base_y = (w - size) // 2, (h - size) // 2
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ox, oy = base_x + dx, base_y + dy
                    placed = np.zeros((h, w), dtype=np.float32)
                    x_lo, x_hi = max(0, ox), min(w, ox + size)
                    y_lo, y_hi = max(0, oy), min(h, oy + size)
                    if x_lo < x_hi and y_lo < y_hi:
                        placed[y_lo:y_hi, x_lo:x_hi] = template[y_lo - oy : y_hi - oy, x_lo - ox : x_hi - ox]
                    names.append(shape)
                    clipped.append(placed.reshape(-1))
                    areas.append(float(np.count_nonzero(template)))
    return tuple(names), np.stack(clipped), np.asarray(areas, dtype=np.float32)


def _best_shape(mask: np.ndarray, shapes: Sequence[str]) -> tuple[str, float]:
    """The shape whose template overlaps ``mask`` best, and that IoU (first best on ties)."""
    names, clipped, areas = _candidates(*mask.shape, tuple(shapes))
    inter = clipped @ mask.reshape(-1).astype(np.float32)
    union = float(np.count_nonzero(mask)) + areas - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    best = int(iou.argmax())
    return names[best], float(iou[best])


def detect(
    image: Image.Image | np.ndarray,
    *,
    colours: Mapping[str, tuple[int, int, int]] = COLOURS,
    shapes: Sequence[str] = SHAPES,
    min_area: int = 16,
    min_side: int = 8,
    min_score: float = MIN_SCORE,
    max_distance: float = 80.0,
) -> list[ShapeDetection]:
    """Detect the flat-coloured shapes in a ShapeWorld image.

    Args:
        image: RGB image, or an ``(H, W, 3)`` array on the 0-255 scale.
        colours: Palette mapping colour names to RGB.
        shapes: Shape names to match against.
        min_area: Components with fewer pixels are ignored.
        min_side: Components whose box is smaller than this on both sides are
            ignored: the default worlds' objects are >= 10 pixels, and a
            model's stray 4x4 code patch is a perfect little "square".
        min_score: Components whose best template IoU is below this are not
            reported; this is what rejects noise blobs (0.8: an untrained
            model's images yield a detection in under 1% of images, while the
            default codebook's redraws of real objects score >= 0.9 in 99%).
        max_distance: Pixels further than this from every palette entry count
            as background.

    Returns:
        Detections sorted by area, largest first.
    """
    if not shapes:
        raise ValueError("need at least one shape")
    labels = segment(image, colours=colours, max_distance=max_distance)
    names = list(colours)
    detections: list[ShapeDetection] = []
    for pixels in _components(labels):
        if len(pixels) < min_area:
            continue
        ys = np.fromiter((p[0] for p in pixels), dtype=np.int64, count=len(pixels))
        xs = np.fromiter((p[1] for p in pixels), dtype=np.int64, count=len(pixels))
        x0, x1 = int(xs.min()), int(xs.max()) + 1
        y0, y1 = int(ys.min()), int(ys.max()) + 1
        if max(x1 - x0, y1 - y0) < min_side:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        mask[ys - y0, xs - x0] = True
        shape, score = _best_shape(mask, shapes)
        if score < min_score:
            continue
        full = np.zeros(labels.shape, dtype=bool)
        full[ys, xs] = True
        detections.append(
            ShapeDetection(
                shape=shape,
                colour=names[int(labels[ys[0], xs[0]]) - 1],
                bbox=(x0, y0, x1, y1),
                centroid=(float(xs.mean()) + 0.5, float(ys.mean()) + 0.5),
                area=len(pixels),
                score=score,
                mask=full,
            )
        )
    detections.sort(key=lambda d: d.area, reverse=True)
    return detections


def agreement_with_ground_truth(scene: Scene, detections: Sequence[ShapeDetection]) -> bool:
    """Check that detections describe exactly the objects of a scene.

    Args:
        scene: The ground-truth scene.
        detections: Output of :func:`detect` on an image of the scene.

    Returns:
        True if the multiset of detected ``(shape, colour, box)`` equals the
        scene's: every object found, with the right shape, colour, position and
        size, and nothing else.
    """
    truth = Counter((obj.shape, obj.colour, obj.bbox) for obj in scene.objects)
    return truth == Counter((d.shape, d.colour, d.bbox) for d in detections)


class ShapeWorldDetector:
    """The exact ShapeWorld detector behind the :class:`~reca.evaluation.geneval.Detector` protocol."""

    def __init__(self, colours: Sequence[str], shapes: Sequence[str] = SHAPES) -> None:
        """Args: colours: the world's colour names; shapes: its shape names."""
        unknown = sorted(set(colours) - set(PALETTE)) + sorted(set(shapes) - set(SHAPES))
        if unknown:
            raise ValueError(f"the shapeworld detector does not know {unknown}; colours: {list(PALETTE)}, "
                             f"shapes: {list(SHAPES)}")
        self.palette = {c: PALETTE[c] for c in colours}
        self.shapes = tuple(shapes)

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Every object in each image; the box is the component's, end-exclusive."""
        return [
            [Detection(label=d.shape, score=d.score, box=tuple(float(v) for v in d.bbox), mask=d.mask)
             for d in detect(image, colours=self.palette, shapes=self.shapes)]
            for image in images
        ]


class PaletteColourClassifier:
    """Majority vote of the masked pixels' nearest palette colours (exact on ShapeWorld images)."""

    def __init__(self, colours: Sequence[str] | Mapping[str, tuple[int, int, int]] = GENEVAL_COLOURS) -> None:
        """Args: colours: colour names from the ShapeWorld palette, or a name -> RGB mapping."""
        palette = dict(colours) if isinstance(colours, Mapping) else {c: PALETTE[c] for c in colours}
        if not palette:
            raise ValueError("need at least one colour")
        self.names = list(palette)
        self.rgb = np.array(list(palette.values()), dtype=np.float32)

    def classify(self, image: Image.Image, detections: Sequence[Detection], classname: str) -> list[str]:
        """One colour per detection (``classname`` is unused: pixels carry their own colour)."""
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        out = []
        for det in detections:
            if det.mask is not None:
                chosen = pixels[det.mask]
            else:
                x0, y0, x1, y1 = (round(v) for v in det.box)
                chosen = pixels[y0:y1, x0:x1].reshape(-1, 3)
            if chosen.size == 0:
                out.append(self.names[0])
                continue
            nearest = np.linalg.norm(chosen[:, None, :] - self.rgb[None], axis=-1).argmin(-1)
            out.append(self.names[Counter(nearest.tolist()).most_common(1)[0][0]])
        return out
