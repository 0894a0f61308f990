"""ShapeWorld: the synthetic image/caption world of the embedded default.

Images are small RGB pictures on a plain grey background holding flat-coloured
shapes. Every image is generated from an explicit :class:`Scene` (shape,
colour, position and size of every object), so generated images can be scored
exactly (``reca.shapeworld.detector``) and rendered images give the
detector's ground truth.

Two world recipes (:class:`WorldSpec`, presets in :data:`PRESETS`):

* ``geneval`` (the default): 1 to 4 objects, five shapes, six of GenEval's
  colours, captions in GenEval's own grammar. Each scene is drawn for one of
  GenEval's six tasks and captioned the way GenEval would prompt for it:
  "a photo of a circle", "a photo of a red circle", "a photo of a circle and a
  square", "a photo of a red circle and a blue square", "a photo of a circle
  left of a square" (the relation holds by GenEval's own position rule), "a
  photo of three circles". Objects of multi-object scenes sit in distinct
  cells of a 2x2 grid, so they never touch and relations are clear.
* ``legacy``: the earlier default, 1-2 objects (left and right halves),
  three shapes, captions "a red circle left of a blue square";
  ``reca make-world --preset legacy`` rewrites it byte for byte.

Splits: ``captioned`` (image/caption pairs for SFT, with the colour bias of
the paper's "yellow broccoli" story: each shape appears in its usual colour
with probability ``bias``), ``unlabeled`` (for RecA: no captions, no bias) and
``heldout`` (unbiased images for reconstruction fidelity). The held-out
evaluation prompts are GenEval's recipe over the world's shapes and colours
(``reca.evaluation.geneval_prompts``), built by the ``evaluate`` stage.
Writing a world to disk lives in ``reca.shapeworld.writer``; the shape and
colour names, and the captioned split's usual colours, in ``reca.vocabulary``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from reca.evaluation.geneval import relative_position
from reca.evaluation.geneval_prompts import (
    POSITIONS,
    TASKS,
    color_attr_prompt,
    colors_prompt,
    counting_prompt,
    position_prompt,
    single_object_prompt,
    two_object_prompt,
)
from reca.vocabulary import GENEVAL_COLOURS, SHAPES, USUAL_COLOUR, WORLD_COLOURS

BACKGROUND: tuple[int, int, int] = (128, 128, 128)

# Saturated and far apart (pairwise RGB distance >= 90, and >= 100 from the grey
# background) so nearest-palette classification of generated pixels is unambiguous.
# Every name is one of GenEval's ten colours.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 0),
    "yellow": (240, 230, 20),
    "green": (30, 170, 40),
    "blue": (30, 70, 220),
    "purple": (140, 40, 190),
    "pink": (250, 120, 190),
    "brown": (130, 75, 20),
    "black": (25, 25, 25),
    "white": (240, 240, 240),
}
assert set(PALETTE) == set(GENEVAL_COLOURS)

#: the six colours of both default worlds
COLOURS: dict[str, tuple[int, int, int]] = {name: PALETTE[name] for name in WORLD_COLOURS}

LEGACY_SHAPES: tuple[str, ...] = SHAPES[:3]

SPLITS: tuple[str, ...] = ("captioned", "unlabeled", "heldout")


@dataclass(frozen=True)
class SceneObject:
    """One flat-coloured shape in a scene.

    Attributes:
        shape: Shape name, e.g. ``"circle"``.
        colour: Colour name, a key of the palette, e.g. ``"red"``.
        cx: Horizontal centre of the bounding box in pixels (pixel ``i`` spans
            ``[i, i + 1)``).
        cy: Vertical centre of the bounding box in pixels.
        size: Side of the square bounding box in pixels.
    """

    shape: str
    colour: str
    cx: float
    cy: float
    size: int

    def __post_init__(self) -> None:
        """Reject sizes that cannot be drawn."""
        if self.size < 1:
            raise ValueError(f"object size must be >= 1, got {self.size}")

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Integer bounding box ``(x0, y0, x1, y1)``, inclusive-exclusive."""
        # Round half up explicitly: Python's round() would send 2.5 and 3.5 in
        # different directions and shift some objects by a pixel.
        x0 = math.floor(self.cx - self.size / 2 + 0.5)
        y0 = math.floor(self.cy - self.size / 2 + 0.5)
        return (x0, y0, x0 + self.size, y0 + self.size)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable representation."""
        return {
            "shape": self.shape,
            "colour": self.colour,
            "cx": self.cx,
            "cy": self.cy,
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SceneObject:
        """Build an object from :meth:`to_dict` output.

        Args:
            data: Mapping with keys ``shape``, ``colour``, ``cx``, ``cy``, ``size``.

        Returns:
            The reconstructed object.
        """
        return cls(
            shape=str(data["shape"]),
            colour=str(data["colour"]),
            cx=float(data["cx"]),
            cy=float(data["cy"]),
            size=int(data["size"]),
        )


@dataclass(frozen=True)
class Scene:
    """A full image description: a background plus some objects.

    Attributes:
        objects: The objects, in any order (captions sort them left to right).
        image_size: Side of the square image in pixels.
    """

    objects: tuple[SceneObject, ...]
    image_size: int = 32

    def ordered(self) -> tuple[SceneObject, ...]:
        """Return the objects sorted left to right by centre."""
        return tuple(sorted(self.objects, key=lambda obj: obj.cx))

    def caption(self) -> str:
        """Describe the scene, naming objects from left to right.

        Returns:
            E.g. ``"a red circle"`` or ``"a red circle left of a blue square"``.

        Raises:
            ValueError: If the scene has no objects.
        """
        if not self.objects:
            raise ValueError("cannot caption an empty scene")
        return " left of ".join(f"a {o.colour} {o.shape}" for o in self.ordered())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable representation."""
        return {
            "image_size": self.image_size,
            "objects": [obj.to_dict() for obj in self.objects],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scene:
        """Build a scene from :meth:`to_dict` output.

        Args:
            data: Mapping with keys ``objects`` (list of object dicts) and
                optionally ``image_size``.

        Returns:
            The reconstructed scene.
        """
        return cls(
            objects=tuple(SceneObject.from_dict(obj) for obj in data["objects"]),
            image_size=int(data.get("image_size", 32)),
        )


def _cross_arm(size: int) -> int:
    # About a third of the side, with the side's parity so the cross is symmetric.
    arm = max(1, round(size / 3))
    return arm + 1 if (size - arm) % 2 else arm


@lru_cache(maxsize=1024)
def _shape_mask_cached(shape: str, size: int) -> np.ndarray:
    last = size - 1
    if shape in ("diamond", "cross"):
        centre = last / 2
        ys, xs = np.mgrid[0:size, 0:size]
        if shape == "diamond":
            # Half a pixel of slack reaches the box edges for every size.
            mask = np.abs(xs - centre) + np.abs(ys - centre) <= size / 2
        else:
            half = _cross_arm(size) / 2
            mask = (np.abs(xs - centre) < half) | (np.abs(ys - centre) < half)
        mask = mask.astype(bool)
        mask.setflags(write=False)
        return mask
    canvas = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse((0, 0, last, last), fill=1)
    elif shape == "square":
        draw.rectangle((0, 0, last, last), fill=1)
    elif shape == "triangle":
        # Even sizes have no single centre column; a two-pixel flat apex keeps
        # the triangle mirror-symmetric instead of leaning to one side.
        apex = [(last // 2, 0), (size // 2, 0)] if size % 2 == 0 else [(last // 2, 0)]
        draw.polygon([*apex, (last, last), (0, last)], fill=1)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    mask = np.array(canvas, dtype=bool)
    mask.setflags(write=False)
    return mask


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Return the boolean pixel mask of a shape drawn in a ``size`` x ``size`` box.

    This is the single source of truth for how shapes look: :func:`render`
    pastes these masks and the detector matches against them.

    Args:
        shape: One of :data:`SHAPES`.
        size: Side of the bounding box in pixels.

    Returns:
        A read-only boolean array of shape ``(size, size)``.

    Raises:
        ValueError: If the shape is unknown or the size is not positive.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return _shape_mask_cached(shape, int(size))


def render(
    scene: Scene,
    *,
    colours: Mapping[str, tuple[int, int, int]] = PALETTE,
    background: tuple[int, int, int] = BACKGROUND,
) -> Image.Image:
    """Render a scene to an RGB image without antialiasing.

    Hard edges keep every pixel exactly a palette colour, which is what makes
    detection on clean renders exact.

    Args:
        scene: The scene to draw.
        colours: Palette mapping colour names to RGB.
        background: Background RGB colour.

    Returns:
        A ``scene.image_size`` x ``scene.image_size`` RGB image.
    """
    image = Image.new("RGB", (scene.image_size, scene.image_size), background)
    for obj in scene.objects:
        x0, y0, _, _ = obj.bbox
        mask = Image.fromarray(shape_mask(obj.shape, obj.size).astype(np.uint8) * 255)
        image.paste(tuple(colours[obj.colour]), (x0, y0), mask)
    return image


def _sample_shape_colour(
    rng: np.random.Generator,
    bias: float | None,
    shapes: Sequence[str],
    colours: Sequence[str],
    usual: Mapping[str, str],
    taken: set[tuple[str, str]],
) -> tuple[str, str]:
    def free_colours(shape: str, *, exclude_usual: bool) -> list[str]:
        return [
            c for c in colours if (shape, c) not in taken and not (exclude_usual and usual.get(shape) == c)
        ]

    if bias is not None:
        # Decide "usual or not" first and only then exclude pairs already in
        # the scene: the per-object usual-colour rate stays exactly `bias`
        # even though identical objects are forbidden (plain rejection sampling
        # would throw away mostly usual pairs and dilute the bias).
        if rng.random() < bias:
            candidates = [s for s in shapes if usual.get(s) in colours and (s, usual[s]) not in taken]
            if candidates:
                shape = candidates[int(rng.integers(len(candidates)))]
                return shape, usual[shape]
        candidates = [s for s in shapes if free_colours(s, exclude_usual=True)]
        if candidates:
            shape = candidates[int(rng.integers(len(candidates)))]
            options = free_colours(shape, exclude_usual=True)
            return shape, options[int(rng.integers(len(options)))]
    candidates = [s for s in shapes if free_colours(s, exclude_usual=False)]
    if not candidates:
        raise ValueError("not enough shape/colour combinations for distinct objects")
    shape = candidates[int(rng.integers(len(candidates)))]
    options = free_colours(shape, exclude_usual=False)
    return shape, options[int(rng.integers(len(options)))]


def sample_scene(
    rng: np.random.Generator,
    *,
    n_objects: int,
    bias: float | None,
    image_size: int = 32,
    min_size: int = 10,
    max_size: int = 13,
    shapes: Sequence[str] = LEGACY_SHAPES,
    colours: Sequence[str] = tuple(COLOURS),
    usual: Mapping[str, str] = USUAL_COLOUR,
) -> Scene:
    """Sample a random scene of the ``legacy`` world.

    The image is cut into ``n_objects`` equal vertical strips and one object is
    placed, with jitter, fully inside each strip, so objects never overlap and
    the returned ``objects`` are ordered left to right. Neighbouring objects
    keep at least a one-pixel gap so they never form a single connected blob.
    No two objects share both shape and colour, so captions are unambiguous.

    Args:
        rng: Source of randomness.
        n_objects: Number of objects (1 or 2 in the legacy world).
        bias: Probability that an object has its shape's usual colour (other
            colours are then uniform); ``None`` samples colours uniformly.
        image_size: Side of the square image in pixels.
        min_size: Smallest object bounding-box side in pixels.
        max_size: Largest object bounding-box side in pixels.
        shapes: Shape names to draw from.
        colours: Colour names to draw from.
        usual: Usual colour of each shape (shapes missing here have none).

    Returns:
        The sampled scene.

    Raises:
        ValueError: If the arguments are inconsistent or objects cannot fit.
    """
    if n_objects < 1:
        raise ValueError(f"n_objects must be >= 1, got {n_objects}")
    if bias is not None and not 0.0 <= bias <= 1.0:
        raise ValueError(f"bias must be in [0, 1] or None, got {bias}")
    if not 1 <= min_size <= max_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
    if max_size > image_size:
        raise ValueError("objects larger than the image")

    strip = image_size / n_objects
    objects: list[SceneObject] = []
    taken: set[tuple[str, str]] = set()
    for index in range(n_objects):
        shape, colour = _sample_shape_colour(rng, bias, shapes, colours, usual, taken)
        taken.add((shape, colour))
        size = int(rng.integers(min_size, max_size + 1))
        # Inner strip borders give up one pixel on each side: the gap keeps
        # two same-coloured neighbours from merging into one component.
        lo = math.ceil(index * strip) + (1 if index > 0 else 0)
        hi = math.floor((index + 1) * strip) - (1 if index < n_objects - 1 else 0)
        if hi - lo < size:
            raise ValueError(
                f"an object of size {size} does not fit in a {hi - lo}-pixel strip; "
                "use fewer objects, smaller objects or a larger image"
            )
        x0 = int(rng.integers(lo, hi - size + 1))
        y0 = int(rng.integers(0, image_size - size + 1))
        objects.append(SceneObject(shape=shape, colour=colour, cx=x0 + size / 2, cy=y0 + size / 2, size=size))
    return Scene(objects=tuple(objects), image_size=image_size)




# ------------------------------------------------------------------ world recipes

_UNIFORM_TASKS = tuple((task, 1.0) for task in TASKS)


@dataclass(frozen=True)
class WorldSpec:
    """Everything that decides what a world's scenes and captions look like.

    Attributes:
        style: ``geneval`` (scenes drawn per GenEval task, GenEval-grammar
            captions) or ``legacy`` (1-2 objects in halves, "a X left of a Y").
        shapes: Shape names (the world's object classes).
        colours: Colour names, from GenEval's ten.
        usual: ``(shape, colour)`` pairs: the usual colour of each shape (the bias).
        image_size: Image side in pixels.
        min_size: Smallest object side in pixels.
        max_size: Largest object side in pixels.
        max_count: Most objects of a counting scene (``geneval`` style; at most 4).
        task_weights: ``(task, weight)`` pairs: how often scenes are drawn for
            each GenEval task (``geneval`` style).
        two_object_fraction: Probability of a two-object scene (``legacy`` style).
    """

    style: Literal["geneval", "legacy"] = "geneval"
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)
    usual: tuple[tuple[str, str], ...] = tuple(USUAL_COLOUR.items())
    image_size: int = 32
    # 10-14 pixels: the default 4x4-patch codebook redraws every shape of these
    # sizes so that the exact detector still reads it (smaller crosses and
    # diamonds come back as blobs).
    min_size: int = 10
    max_size: int = 14
    max_count: int = 4
    task_weights: tuple[tuple[str, float], ...] = field(default=_UNIFORM_TASKS)
    two_object_fraction: float = 0.5

    def __post_init__(self) -> None:
        """Reject worlds that cannot be drawn or scored."""
        unknown = sorted(set(self.shapes) - set(SHAPES))
        if unknown or len(set(self.shapes)) != len(self.shapes):
            raise ValueError(f"shapes must be distinct names from {list(SHAPES)}; bad: {unknown or self.shapes}")
        bad_colours = sorted(set(self.colours) - set(PALETTE))
        if bad_colours or len(self.colours) < 2:
            raise ValueError(f"need >= 2 colours from GenEval's {list(PALETTE)}; bad: {bad_colours}")
        if len(self.shapes) < 2:
            raise ValueError("need at least two shapes")
        if not 1 <= self.min_size <= self.max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
        if self.style == "geneval":
            # Multi-object scenes use a 2x2 grid; inner cell borders give up a pixel.
            if self.max_size > self.image_size // 2 - 1:
                raise ValueError(f"max_size {self.max_size} does not fit a 2x2 grid cell of a "
                                 f"{self.image_size}-pixel image (at most {self.image_size // 2 - 1})")
            if not 2 <= self.max_count <= 4:
                raise ValueError(f"max_count must be in [2, 4] (one object per grid cell), got {self.max_count}")
            weights = dict(self.task_weights)
            if set(weights) - set(TASKS) or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise ValueError(f"task_weights must give non-negative weights to tasks of {list(TASKS)}")
        if not 0.0 <= self.two_object_fraction <= 1.0:
            raise ValueError(f"two_object_fraction must be in [0, 1], got {self.two_object_fraction}")

    @property
    def usual_colour(self) -> dict[str, str]:
        """Usual colour of each shape that has one in this world."""
        return {s: c for s, c in self.usual if s in self.shapes and c in self.colours}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (for summaries and ground truth)."""
        return {
            "style": self.style, "shapes": list(self.shapes), "colours": list(self.colours),
            "usual": self.usual_colour, "image_size": self.image_size, "min_size": self.min_size,
            "max_size": self.max_size, "max_count": self.max_count, "task_weights": dict(self.task_weights),
            "two_object_fraction": self.two_object_fraction,
        }


PRESETS: dict[str, WorldSpec] = {
    "geneval": WorldSpec(),
    "legacy": WorldSpec(style="legacy", shapes=LEGACY_SHAPES, min_size=10, max_size=13),
}
#: images per split when the command line does not say
PRESET_COUNTS: dict[str, dict[str, int]] = {
    "geneval": {"captioned": 2000, "unlabeled": 1000, "heldout": 64},
    "legacy": {"captioned": 600, "unlabeled": 300, "heldout": 64},
}
DEFAULT_PRESET = "geneval"


def _colour_for(rng: np.random.Generator, shape: str, spec: WorldSpec, bias: float | None) -> str:
    usual = spec.usual_colour.get(shape)
    if bias is None or usual is None:
        return spec.colours[int(rng.integers(len(spec.colours)))]
    if rng.random() < bias:
        return usual
    others = [c for c in spec.colours if c != usual]
    return others[int(rng.integers(len(others)))]


def place_objects(rng: np.random.Generator, spec: WorldSpec, shapes: Sequence[str], colours: Sequence[str]
                  ) -> tuple[SceneObject, ...]:
    """One object anywhere; several in distinct cells of a 2x2 grid, a gap of >= 2 pixels between cells."""
    size = spec.image_size
    half = size // 2
    if len(shapes) == 1:
        side = int(rng.integers(spec.min_size, spec.max_size + 1))
        x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        return (SceneObject(shapes[0], colours[0], cx=x0 + side / 2, cy=y0 + side / 2, size=side),)
    objects = []
    for cell, shape, colour in zip(rng.choice(4, size=len(shapes), replace=False), shapes, colours, strict=True):
        side = int(rng.integers(spec.min_size, spec.max_size + 1))
        corner = []
        for index in (int(cell) % 2, int(cell) // 2):
            lo = index * half + (1 if index else 0)
            hi = (index + 1) * half - (0 if index else 1)
            corner.append(int(rng.integers(lo, hi - side + 1)))
        objects.append(SceneObject(shape, colour, cx=corner[0] + side / 2, cy=corner[1] + side / 2, size=side))
    return tuple(objects)


def _box(obj: SceneObject) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in obj.bbox)  # type: ignore[return-value]


def sample_task_scene(rng: np.random.Generator, spec: WorldSpec, task: str, bias: float | None
                      ) -> tuple[Scene, dict[str, Any]]:
    """Draw a scene for one GenEval task and the GenEval metadata that describes it.

    Args:
        rng: Source of randomness.
        spec: A ``geneval``-style world.
        task: One of GenEval's six task tags.
        bias: Usual-colour probability per object; ``None`` for uniform colours.

    Returns:
        The scene and its GenEval metadata (``prompt`` is the caption). A
        ``position`` scene whose objects happen to stand in no GenEval relation
        is described as ``two_object`` instead.
    """
    n = len(spec.shapes)
    if task in ("single_object", "colors"):
        shape = spec.shapes[int(rng.integers(n))]
        (obj,) = place_objects(rng, spec, [shape], [_colour_for(rng, shape, spec, bias)])
        meta = single_object_prompt(shape) if task == "single_object" else colors_prompt(shape, obj.colour)
        return Scene((obj,), spec.image_size), meta
    if task == "counting":
        shape = spec.shapes[int(rng.integers(n))]
        count = int(rng.integers(2, spec.max_count, endpoint=True))
        colours = [_colour_for(rng, shape, spec, bias) for _ in range(count)]
        return Scene(place_objects(rng, spec, [shape] * count, colours), spec.image_size), counting_prompt(shape, count)
    if task not in ("two_object", "position", "color_attr"):
        raise ValueError(f"unknown task {task!r}; GenEval's are {list(TASKS)}")
    a, b = (spec.shapes[int(i)] for i in rng.choice(n, size=2, replace=False))
    obj_a, obj_b = place_objects(rng, spec, [a, b], [_colour_for(rng, a, spec, bias), _colour_for(rng, b, spec, bias)])
    scene = Scene((obj_a, obj_b), spec.image_size)
    if task == "color_attr":
        return scene, color_attr_prompt(a, obj_a.colour, b, obj_b.colour)
    relations = [r for r in POSITIONS if r in relative_position(_box(obj_a), _box(obj_b))]
    if task == "position" and relations:
        return scene, position_prompt(a, relations[int(rng.integers(len(relations)))], b)
    return scene, two_object_prompt(a, b)


def sample_world_scene(rng: np.random.Generator, spec: WorldSpec, bias: float | None
                       ) -> tuple[Scene, dict[str, Any] | None]:
    """Draw one scene of the world: (scene, GenEval metadata for ``geneval`` style, else ``None``)."""
    if spec.style == "legacy":
        n_objects = 2 if rng.random() < spec.two_object_fraction else 1
        scene = sample_scene(rng, n_objects=n_objects, bias=bias, image_size=spec.image_size,
                             min_size=spec.min_size, max_size=spec.max_size, shapes=spec.shapes,
                             colours=spec.colours, usual=spec.usual_colour)
        return scene, None
    tasks, weights = zip(*spec.task_weights, strict=True)
    p = np.asarray(weights, dtype=float)
    task = tasks[int(rng.choice(len(tasks), p=p / p.sum()))]
    return sample_task_scene(rng, spec, task, bias)


def caption_of(scene: Scene, metadata: Mapping[str, Any] | None) -> str:
    """The caption of a scene: its GenEval prompt, or the legacy left-to-right description."""
    return str(metadata["prompt"]) if metadata is not None else scene.caption()
