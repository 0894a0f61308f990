"""Write a ShapeWorld data set to disk: the ``data/raw`` tree the pipeline starts from.

``reca make-world`` (and ``python -m reca.shapeworld.writer``) call
:func:`write_world` with a world recipe from :mod:`reca.shapeworld.world`.
The output is byte-identical for the same arguments, and each split draws from
its own random stream, so changing one split's count leaves the others alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reca.shapeworld.world import (
    DEFAULT_PRESET,
    PRESET_COUNTS,
    PRESETS,
    SPLITS,
    Scene,
    WorldSpec,
    caption_of,
    render,
    sample_world_scene,
)

_FILE_PATTERN = re.compile(r"^\d{5}\.png$")


def _write_split(split_dir: Path, rng: np.random.Generator, *, count: int, bias: float | None,
                 spec: WorldSpec) -> list[tuple[Scene, dict[str, Any] | None]]:
    split_dir.mkdir(parents=True, exist_ok=True)
    drawn = []
    written: set[str] = set()
    for index in range(count):
        scene, metadata = sample_world_scene(rng, spec, bias)
        name = f"{index:05d}.png"
        render(scene).save(split_dir / name, format="PNG")
        written.add(name)
        drawn.append((scene, metadata))
    # Images left over from an earlier, larger run would silently join the
    # split for any loader that globs the directory.
    for stale in split_dir.iterdir():
        if _FILE_PATTERN.match(stale.name) and stale.name not in written:
            stale.unlink()
    return drawn


def _usual_rate(scenes: Sequence[Scene], usual: dict[str, str]) -> float | None:
    objects = [obj for scene in scenes for obj in scene.objects]
    if not objects:
        return None
    return sum(usual.get(obj.shape) == obj.colour for obj in objects) / len(objects)


def write_world(out_dir: str | Path, *, seed: int, n_captioned: int, n_unlabeled: int, n_heldout: int,
                bias: float, spec: WorldSpec | None = None) -> dict[str, Any]:
    """Write a full ShapeWorld data set to disk.

    Layout::

        out_dir/captioned/NNNNN.png, out_dir/captioned/captions.jsonl
        out_dir/unlabeled/NNNNN.png
        out_dir/heldout/NNNNN.png
        out_dir/ground_truth.jsonl

    ``ground_truth.jsonl`` has one row per image: ``split``, ``file``,
    ``scene`` (every object's shape, colour, centre and size) and, for the
    ``geneval`` style, ``task`` (the GenEval task the scene was drawn for) and
    ``metadata`` (the GenEval metadata whose prompt is the caption; captioned
    split only).

    Args:
        out_dir: Directory to write into (created if needed).
        seed: Master random seed; each split draws from its own child of
            ``SeedSequence(seed)``.
        n_captioned: Number of captioned (biased) images.
        n_unlabeled: Number of unlabeled (unbiased) images.
        n_heldout: Number of held-out (unbiased) images.
        bias: Usual-colour probability of the captioned split.
        spec: The world recipe (default: the ``geneval`` preset).

    Returns:
        A summary: the world, per-split counts, objects-per-scene histograms,
        task counts and usual-colour rates.

    Raises:
        ValueError: If a count is negative or ``bias`` is out of range.
    """
    spec = spec or PRESETS[DEFAULT_PRESET]
    counts = {"captioned": n_captioned, "unlabeled": n_unlabeled, "heldout": n_heldout}
    for split, count in counts.items():
        if count < 0:
            raise ValueError(f"{split} count must be >= 0, got {count}")
    if not 0.0 <= bias <= 1.0:
        raise ValueError(f"bias must be in [0, 1], got {bias}")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    children = np.random.SeedSequence(seed).spawn(len(SPLITS))
    split_bias: dict[str, float | None] = {"captioned": bias, "unlabeled": None, "heldout": None}
    drawn = {
        split: _write_split(out_dir / split, np.random.default_rng(child), count=counts[split],
                            bias=split_bias[split], spec=spec)
        for split, child in zip(SPLITS, children, strict=True)
    }

    with open(out_dir / "captioned" / "captions.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        for index, (scene, metadata) in enumerate(drawn["captioned"]):
            fh.write(json.dumps({"file": f"{index:05d}.png", "caption": caption_of(scene, metadata)}) + "\n")

    with open(out_dir / "ground_truth.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        for split in SPLITS:
            for index, (scene, metadata) in enumerate(drawn[split]):
                record: dict[str, Any] = {"split": split, "file": f"{split}/{index:05d}.png", "scene": scene.to_dict()}
                if metadata is not None:
                    record["task"] = metadata["tag"]
                    if split == "captioned":
                        record["metadata"] = metadata
                fh.write(json.dumps(record) + "\n")

    usual = spec.usual_colour
    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "bias": bias,
        "world": spec.to_dict(),
        "counts": dict(counts),
        "objects_per_scene": {
            split: dict(sorted(Counter(len(s.objects) for s, _ in pairs).items())) for split, pairs in drawn.items()
        },
        "tasks": {split: dict(Counter(m["tag"] for _, m in pairs if m)) for split, pairs in drawn.items()},
        "usual_colour_rate": {split: _usual_rate([s for s, _ in pairs], usual) for split, pairs in drawn.items()},
    }


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _task_weights(text: str) -> dict[str, float]:
    """``colors=3,color_attr=3`` -> {task: weight}; tasks left out keep the preset's weight."""
    weights = {}
    for part in _names(text):
        task, _, value = part.partition("=")
        try:
            weights[task.strip()] = float(value)
        except ValueError:  # no '=' leaves value empty
            raise argparse.ArgumentTypeError(f"expected task=weight, got {part!r}") from None
    return weights


def add_world_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the world's command-line options (shared by ``reca make-world`` and this module's ``main``)."""
    parser.add_argument("--out", type=Path, default=Path("data/raw"), help="output directory (default: data/raw)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                        help=f"world recipe (default: {DEFAULT_PRESET}); 'legacy' rewrites the earlier "
                        "3-shape, 1-2 object world byte for byte")
    parser.add_argument("--seed", type=int, default=0, help="master random seed (default: 0)")
    for split in ("captioned", "unlabeled", "heldout"):
        parser.add_argument(f"--{split}", type=int, default=None,
                            help=f"number of {split} images (default: the preset's, "
                            f"{PRESET_COUNTS[DEFAULT_PRESET][split]} for {DEFAULT_PRESET})")
    parser.add_argument("--bias", type=float, default=0.9,
                        help="probability that an object of the captioned split has its shape's usual colour "
                        "(default: 0.9)")
    parser.add_argument("--shapes", type=_names, default=None, help="comma-separated shapes (default: the preset's)")
    parser.add_argument("--colours", type=_names, default=None,
                        help="comma-separated colours from GenEval's ten (default: the preset's)")
    parser.add_argument("--image-size", type=int, default=None, help="image side in pixels (default: the preset's)")
    parser.add_argument("--min-size", type=int, default=None, help="smallest object side (default: the preset's)")
    parser.add_argument("--max-size", type=int, default=None, help="largest object side (default: the preset's)")
    parser.add_argument("--max-count", type=int, default=None,
                        help="most objects in a counting scene, 2-4 (geneval style; default: the preset's)")
    parser.add_argument("--two-object-fraction", type=float, default=None,
                        help="probability of a two-object scene (legacy style; default: the preset's)")
    parser.add_argument("--task-weights", type=_task_weights, default=None,
                        help="how often scenes are drawn for each GenEval task, e.g. 'colors=5,color_attr=5' "
                        "makes most captions name a colour (geneval style; tasks left out keep the preset's "
                        "weight, 1 each)")


def world_from_args(args: argparse.Namespace) -> tuple[WorldSpec, dict[str, int]]:
    """The world recipe and split counts that parsed arguments ask for (preset plus overrides)."""
    overrides = {key: getattr(args, key) for key in ("shapes", "colours", "image_size", "min_size", "max_size",
                                                     "max_count", "two_object_fraction")
                 if getattr(args, key) is not None}
    if getattr(args, "task_weights", None):
        weights = {**dict(PRESETS[args.preset].task_weights), **args.task_weights}
        overrides["task_weights"] = tuple(weights.items())
    spec = dataclasses.replace(PRESETS[args.preset], **overrides)
    counts = {split: getattr(args, split) if getattr(args, split) is not None else default
              for split, default in PRESET_COUNTS[args.preset].items()}
    return spec, counts


def write_world_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Write the world that parsed :func:`add_world_arguments` options describe."""
    spec, counts = world_from_args(args)
    return write_world(args.out, seed=args.seed, n_captioned=counts["captioned"], n_unlabeled=counts["unlabeled"],
                       n_heldout=counts["heldout"], bias=args.bias, spec=spec)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: write a ShapeWorld data set and print a summary.

    Args:
        argv: Command-line arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Process exit status (0 on success; argument errors exit via argparse).
    """
    parser = argparse.ArgumentParser(
        prog="python -m reca.shapeworld.writer",
        description="Write the synthetic ShapeWorld data set: 'captioned' (biased image/caption pairs), "
        "'unlabeled' (unbiased images) and 'heldout' (unbiased images for reconstruction fidelity), plus "
        "ground_truth.jsonl with every scene.",
        epilog="Example: python -m reca.shapeworld.writer --out data/raw --seed 0",
    )
    add_world_arguments(parser)
    args = parser.parse_args(argv)
    try:
        summary = write_world_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
