"""Why did multi-object GenEval prompts fail: too few objects, too many, or badly drawn shapes?

For every image of the multi-object tasks (``counting``, ``two_object``,
``position``, ``color_attr``) the exact ShapeWorld detector reads the image
again, this time keeping every colour component whatever its shape score, and
the script reports, in % of the task's images:

* ``correct``: GenEval's verdict (from ``results.jsonl``);
* ``fewer_objects``: fewer components than the prompt asks for (objects left
  out, or two of them drawn touching in one colour);
* ``more_objects``: more components than asked;
* ``shape_wrong``: as many components as asked, but at least one is not an
  asked shape at the score GenEval needs for the task (the detector's 0.8
  template IoU, or 0.9 for ``counting``): the objects are there, drawn badly;
* ``iou``: mean template IoU of all components (how cleanly shapes are drawn).

The remaining failures drew the right shapes and failed on colour or position.

Usage::

    python scripts/object_breakdown.py runs/arms/a_more_sft/seed0 runs/arms/b_reca_sft/seed0

Each argument is a folder holding ``report/<model>/results.jsonl`` (what
``scripts/run_arms.py`` writes per run) or a ``results.jsonl`` itself.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

TASKS = ("counting", "two_object", "position", "color_attr")
COUNTS = ("correct", "fewer_objects", "more_objects", "shape_wrong")


def classify(components: Sequence[tuple[str, float]], asked: Mapping[str, int], needed_score: float) -> str | None:
    """The failure class of one image's ``(shape, score)`` components against the asked ``{shape: count}``.

    Returns ``fewer_objects``, ``more_objects``, ``shape_wrong``, or ``None``
    when the right shapes are all there (so a failure came from colour or position).
    """
    wanted = sum(asked.values())
    if len(components) < wanted:
        return "fewer_objects"
    if len(components) > wanted:
        return "more_objects"
    drawn = Counter(shape for shape, score in components if score >= needed_score)
    return None if all(drawn[shape] >= n for shape, n in asked.items()) else "shape_wrong"


def breakdown(results: Path, *, colours: Sequence[str], shapes: Sequence[str], threshold: float = 0.3,
              counting_threshold: float = 0.9) -> dict[str, tuple[int, dict[str, float]]]:
    """Per task in ``TASKS``: number of images in ``results`` and the % of them in each count (and ``iou``)."""
    from reca.evaluation.results_files import read_results
    from reca.shapeworld.detector import MIN_SCORE, detect
    from reca.shapeworld.world import PALETTE

    palette = {c: PALETTE[c] for c in colours}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    ious: dict[str, list[float]] = defaultdict(list)
    for row in read_results(results):
        tag = row["tag"]
        if tag not in TASKS:
            continue
        asked: Counter[str] = Counter()
        for clause in row["metadata"]["include"]:
            asked[clause["class"]] += int(clause.get("count", 1))
        found = detect(Image.open(row["filename"]).convert("RGB"), colours=palette, shapes=shapes, min_score=0.0)
        needed = max(MIN_SCORE, counting_threshold if tag == "counting" else threshold)
        counts[tag]["images"] += 1
        counts[tag]["correct"] += bool(row["correct"])
        ious[tag].extend(d.score for d in found)
        if not row["correct"]:
            failure = classify([(d.shape, d.score) for d in found], asked, needed)
            if failure is not None:
                counts[tag][failure] += 1
    table = {}
    for tag in TASKS:
        n = counts[tag]["images"]
        if not n:
            continue
        pct = {key: 100.0 * counts[tag][key] / n for key in COUNTS}
        pct["iou"] = sum(ious[tag]) / len(ious[tag]) if ious[tag] else float("nan")
        table[tag] = (n, pct)
    return table


def markdown(rows: Sequence[tuple[str, Mapping[str, tuple[int, Mapping[str, float]]]]]) -> str:
    lines = ["| run | task | images | " + " | ".join(COUNTS) + " | iou |", "|---|---|---|" + "---|" * (len(COUNTS) + 1)]
    for name, table in rows:
        for tag, (n, pct) in table.items():
            lines.append(f"| {name} | {tag} | {n} | " + " | ".join(f"{pct[k]:.1f}" for k in COUNTS)
                         + f" | {pct['iou']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or results.jsonl files)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params file whose evaluate section names the classes, colours and thresholds "
                             "(default: params.yaml)")
    opts = parser.parse_args(argv)
    from reca.params import load_section

    evaluate = load_section("evaluate", opts.params)
    options = {"colours": list(evaluate.colours), "shapes": list(evaluate.classes),
               "threshold": evaluate.threshold, "counting_threshold": evaluate.counting_threshold}
    print(markdown([(str(run), breakdown(run, **options)) for run in opts.runs]), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
