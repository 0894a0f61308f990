"""What did each model draw for the GenEval `colors` prompts that ask for an unusual colour?

For every ``colors`` prompt whose colour is not the shape's usual one in the
captioned split (``evaluate.usual_colours``), the exact ShapeWorld detector
reads the image again and the script counts, in % of those images:

* ``correct``: GenEval's verdict (from ``results.jsonl``);
* ``shape_any_colour``: the asked shape is there, in any colour;
* ``shape_in_usual_colour``: the asked shape is there in its usual colour (the bias won);
* ``colour_any_shape``: the asked colour is there, on any shape;
* ``colour_on_other_shape``: the asked colour is there on another shape (the colour went elsewhere).

Usage::

    python scripts/colour_breakdown.py runs/arms/sft runs/arms/a_more_sft/seed0 runs/arms/b_reca_sft/seed0

Each argument is a folder holding ``report/<model>/results.jsonl`` (what
``scripts/run_arms.py`` writes per run) or a ``results.jsonl`` itself.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

COUNTS = ("correct", "shape_any_colour", "shape_in_usual_colour", "colour_any_shape", "colour_on_other_shape")


def breakdown(results: Path, usual: Mapping[str, str], threshold: float = 0.3) -> tuple[int, dict[str, float]]:
    """Number of unusual-colour ``colors`` images in ``results`` and the % of them in each count."""
    from reca.evaluation.results_files import read_results
    from reca.shapeworld.detector import detect

    counts: Counter[str] = Counter()
    n = 0
    for row in read_results(results):
        if row["tag"] != "colors":
            continue
        wanted = row["metadata"]["include"][0]
        shape, colour = wanted["class"], wanted["color"]
        if usual.get(shape) == colour:
            continue
        n += 1
        found = {(d.shape, d.colour) for d in detect(Image.open(row["filename"]).convert("RGB"))
                 if d.score >= threshold}
        counts["correct"] += bool(row["correct"])
        counts["shape_any_colour"] += any(s == shape for s, _ in found)
        counts["shape_in_usual_colour"] += (shape, usual.get(shape)) in found
        counts["colour_any_shape"] += any(c == colour for _, c in found)
        counts["colour_on_other_shape"] += any(c == colour and s != shape for s, c in found)
    return n, {key: 100.0 * counts[key] / n if n else float("nan") for key in COUNTS}


def markdown(rows: Sequence[tuple[str, int, Mapping[str, float]]]) -> str:
    lines = ["| run | images | " + " | ".join(COUNTS) + " |", "|---|---|" + "---|" * len(COUNTS)]
    lines += [f"| {name} | {n} | " + " | ".join(f"{v[k]:.1f}" for k in COUNTS) + " |" for name, n, v in rows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or results.jsonl files)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params file whose evaluate.usual_colours defines the bias (default: params.yaml)")
    opts = parser.parse_args(argv)
    from reca.params import load_section

    usual = dict(load_section("evaluate", opts.params).usual_colours)
    rows = [(str(run), *breakdown(run, usual)) for run in opts.runs]
    print(markdown(rows), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
