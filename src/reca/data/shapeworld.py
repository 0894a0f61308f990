"""ShapeWorld: a tiny synthetic image/caption world for Reconstruction Alignment.

Images are small RGB pictures on a plain grey background holding one or more
flat-coloured shapes. Every image is generated from an explicit :class:`Scene`,
so generated images can later be scored exactly (see
``reca.evaluation.shapeworld_detector``).

The world has three splits:

* ``captioned``: image/caption pairs whose colours are deliberately biased
  (each shape usually appears in its "usual" colour);
* ``unlabeled``: images without captions and without the bias;
* ``heldout``: unbiased images kept aside for reconstruction evaluation.

Run ``python -m reca.data.shapeworld --help`` to write a world to disk.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND: tuple[int, int, int] = (128, 128, 128)

# Saturated and far apart (pairwise RGB distance >= 90, and >= 100 from the grey
# background) so nearest-palette classification of generated pixels is unambiguous.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 0),
    "yellow": (240, 230, 20),
    "green": (30, 170, 40),
    "blue": (30, 70, 220),
    "purple": (140, 40, 190),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# The colour bias of the captioned split.
USUAL_COLOUR: dict[str, str] = {
    "circle": "red",
    "square": "blue",
    "triangle": "yellow",
}

SPLITS: tuple[str, ...] = ("captioned", "unlabeled", "heldout")

_FILE_PATTERN = re.compile(r"^\d{5}\.png$")


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


@lru_cache(maxsize=512)
def _shape_mask_cached(shape: str, size: int) -> np.ndarray:
    canvas = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    last = size - 1
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
        raise ValueError(f"unknown shape {shape!r}")
    mask = np.array(canvas, dtype=bool)
    mask.setflags(write=False)
    return mask


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Return the boolean pixel mask of a shape drawn in a ``size`` x ``size`` box.

    This is the single source of truth for how shapes look: :func:`render`
    pastes these masks and the detector matches against them.

    Args:
        shape: One of the known shape names (``circle``, ``square``, ``triangle``).
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
    colours: Mapping[str, tuple[int, int, int]] = COLOURS,
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
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = tuple(COLOURS),
    usual: Mapping[str, str] = USUAL_COLOUR,
) -> Scene:
    """Sample a random scene.

    The image is cut into ``n_objects`` equal vertical strips and one object is
    placed, with jitter, fully inside each strip, so objects never overlap and
    the returned ``objects`` are ordered left to right. Neighbouring objects
    keep at least a one-pixel gap so they never form a single connected blob.
    No two objects share both shape and colour, so captions are unambiguous.

    Args:
        rng: Source of randomness.
        n_objects: Number of objects (1 or 2 in the default world).
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


def _write_split(
    split_dir: Path,
    rng: np.random.Generator,
    *,
    count: int,
    bias: float | None,
    two_object_fraction: float,
    image_size: int,
) -> list[Scene]:
    split_dir.mkdir(parents=True, exist_ok=True)
    scenes: list[Scene] = []
    written: set[str] = set()
    for index in range(count):
        n_objects = 2 if rng.random() < two_object_fraction else 1
        scene = sample_scene(rng, n_objects=n_objects, bias=bias, image_size=image_size)
        name = f"{index:05d}.png"
        render(scene).save(split_dir / name, format="PNG")
        written.add(name)
        scenes.append(scene)
    # Images left over from an earlier, larger run would silently join the
    # split for any loader that globs the directory.
    for stale in split_dir.iterdir():
        if _FILE_PATTERN.match(stale.name) and stale.name not in written:
            stale.unlink()
    return scenes


def _usual_rate(scenes: Sequence[Scene], usual: Mapping[str, str]) -> float | None:
    objects = [obj for scene in scenes for obj in scene.objects]
    if not objects:
        return None
    return sum(usual.get(obj.shape) == obj.colour for obj in objects) / len(objects)


def write_world(
    out_dir: Path,
    *,
    seed: int,
    n_captioned: int,
    n_unlabeled: int,
    n_heldout: int,
    bias: float,
    two_object_fraction: float = 0.5,
    image_size: int = 32,
) -> dict[str, Any]:
    """Write a full ShapeWorld data set to disk.

    Layout::

        out_dir/captioned/NNNNN.png, out_dir/captioned/captions.jsonl
        out_dir/unlabeled/NNNNN.png
        out_dir/heldout/NNNNN.png
        out_dir/ground_truth.jsonl

    Each split draws from its own child of ``SeedSequence(seed)``, so changing
    one split's count leaves the other splits' images unchanged. The output is
    byte-identical for the same arguments.

    Args:
        out_dir: Directory to write into (created if needed).
        seed: Master random seed.
        n_captioned: Number of captioned (biased) images.
        n_unlabeled: Number of unlabeled (unbiased) images.
        n_heldout: Number of held-out (unbiased) images.
        bias: Usual-colour probability of the captioned split.
        two_object_fraction: Probability that a scene has two objects.
        image_size: Side of the square images in pixels.

    Returns:
        A summary with per-split image counts, two-object counts and
        usual-colour rates.

    Raises:
        ValueError: If a count is negative or a probability is out of range.
    """
    counts = {"captioned": n_captioned, "unlabeled": n_unlabeled, "heldout": n_heldout}
    for split, count in counts.items():
        if count < 0:
            raise ValueError(f"{split} count must be >= 0, got {count}")
    if not 0.0 <= two_object_fraction <= 1.0:
        raise ValueError(f"two_object_fraction must be in [0, 1], got {two_object_fraction}")
    if not 0.0 <= bias <= 1.0:
        raise ValueError(f"bias must be in [0, 1], got {bias}")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    children = np.random.SeedSequence(seed).spawn(len(SPLITS))
    split_bias: dict[str, float | None] = {"captioned": bias, "unlabeled": None, "heldout": None}

    scenes_by_split: dict[str, list[Scene]] = {}
    for split, child in zip(SPLITS, children, strict=True):
        scenes_by_split[split] = _write_split(
            out_dir / split,
            np.random.default_rng(child),
            count=counts[split],
            bias=split_bias[split],
            two_object_fraction=two_object_fraction,
            image_size=image_size,
        )

    with open(out_dir / "captioned" / "captions.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        for index, scene in enumerate(scenes_by_split["captioned"]):
            fh.write(json.dumps({"file": f"{index:05d}.png", "caption": scene.caption()}) + "\n")

    with open(out_dir / "ground_truth.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        for split in SPLITS:
            for index, scene in enumerate(scenes_by_split[split]):
                record = {"split": split, "file": f"{split}/{index:05d}.png", "scene": scene.to_dict()}
                fh.write(json.dumps(record) + "\n")

    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "bias": bias,
        "image_size": image_size,
        "two_object_fraction": two_object_fraction,
        "counts": dict(counts),
        "two_object": {
            split: sum(len(scene.objects) == 2 for scene in scenes)
            for split, scenes in scenes_by_split.items()
        },
        "usual_colour_rate": {
            split: _usual_rate(scenes, USUAL_COLOUR) for split, scenes in scenes_by_split.items()
        },
    }


def eval_prompts(
    *,
    seed: int,
    n_single: int,
    n_two: int,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = tuple(COLOURS),
    usual: Mapping[str, str] = USUAL_COLOUR,
) -> list[dict[str, Any]]:
    """Build held-out text-to-image prompts for compositional evaluation.

    Single-object prompts walk through every shape x colour pair (in a shuffled
    order) before any pair repeats, so unusual combinations are always covered.
    Two-object prompts are random, uniformly coloured, non-identical pairs; the
    first-named object is the one meant to be on the left.

    Args:
        seed: Random seed; the result is deterministic in it.
        n_single: Number of single-object prompts.
        n_two: Number of two-object prompts.
        shapes: Shape names.
        colours: Colour names.
        usual: Usual colour of each shape.

    Returns:
        Single-object prompts followed by two-object prompts, each a dict with
        keys ``prompt``, ``objects`` (list of ``{"shape", "colour"}``),
        ``relation`` (``None`` or ``"left_of"``) and ``usual`` (True if every
        object has its shape's usual colour).

    Raises:
        ValueError: If a count is negative or the world is too small.
    """
    if n_single < 0 or n_two < 0:
        raise ValueError("prompt counts must be >= 0")
    pairs = [(s, c) for s in shapes for c in colours]
    if not pairs:
        raise ValueError("need at least one shape and one colour")
    # Separate streams: asking for more two-object prompts must not reshuffle
    # the single-object ones.
    single_seq, two_seq = np.random.SeedSequence(seed).spawn(2)
    single_rng = np.random.default_rng(single_seq)
    two_rng = np.random.default_rng(two_seq)

    def make(objects: list[tuple[str, str]], relation: str | None) -> dict[str, Any]:
        return {
            "prompt": " left of ".join(f"a {c} {s}" for s, c in objects),
            "objects": [{"shape": s, "colour": c} for s, c in objects],
            "relation": relation,
            "usual": all(usual.get(s) == c for s, c in objects),
        }

    prompts: list[dict[str, Any]] = []
    order: list[int] = []
    for _ in range(n_single):
        if not order:
            order = [int(i) for i in single_rng.permutation(len(pairs))]
        prompts.append(make([pairs[order.pop(0)]], None))

    if n_two and len(pairs) < 2:
        raise ValueError("two-object prompts need at least two shape/colour pairs")
    for _ in range(n_two):
        first, second = (int(i) for i in two_rng.choice(len(pairs), size=2, replace=False))
        prompts.append(make([pairs[first], pairs[second]], "left_of"))
    return prompts


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: write a ShapeWorld data set and print a summary.

    Args:
        argv: Command-line arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Process exit status (0 on success; argument errors exit via argparse).
    """
    parser = argparse.ArgumentParser(
        prog="python -m reca.data.shapeworld",
        description=(
            "Write the synthetic ShapeWorld data set: 'captioned' (biased image/caption "
            "pairs), 'unlabeled' (unbiased images) and 'heldout' (unbiased images for "
            "reconstruction evaluation), plus ground_truth.jsonl with every scene."
        ),
        epilog="Example: python -m reca.data.shapeworld --out data/raw --seed 0 "
        "--captioned 600 --unlabeled 300 --heldout 64 --bias 0.9",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, default=argparse.SUPPRESS, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="master random seed")
    parser.add_argument("--captioned", type=int, default=600, help="number of captioned images")
    parser.add_argument("--unlabeled", type=int, default=300, help="number of unlabeled images")
    parser.add_argument("--heldout", type=int, default=64, help="number of held-out images")
    parser.add_argument(
        "--bias",
        type=float,
        default=0.9,
        help="probability that an object in the captioned split has its shape's usual colour "
        f"({', '.join(f'{s}: {c}' for s, c in USUAL_COLOUR.items())})",
    )
    parser.add_argument(
        "--two-object-fraction",
        type=float,
        default=0.5,
        help="probability that a scene holds two objects (one per half) instead of one",
    )
    parser.add_argument("--image-size", type=int, default=32, help="image side in pixels")
    args = parser.parse_args(argv)
    try:
        summary = write_world(
            args.out,
            seed=args.seed,
            n_captioned=args.captioned,
            n_unlabeled=args.unlabeled,
            n_heldout=args.heldout,
            bias=args.bias,
            two_object_fraction=args.two_object_fraction,
            image_size=args.image_size,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
