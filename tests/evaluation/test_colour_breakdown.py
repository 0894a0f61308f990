"""scripts/colour_breakdown.py: what a model drew for unusual-colour `colors` prompts, re-read by the detector."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from reca.shapeworld.world import Scene, SceneObject, render
from reca_fixtures import REPO

spec = importlib.util.spec_from_file_location("colour_breakdown", REPO / "scripts" / "colour_breakdown.py")
colour_breakdown = importlib.util.module_from_spec(spec)
spec.loader.exec_module(colour_breakdown)

USUAL = {"square": "blue", "circle": "red"}


def _row(tmp_path: Path, name: str, objects: list[SceneObject], prompt: tuple[str, str], correct: bool,
         tag: str = "colors") -> str:
    path = tmp_path / f"{name}.png"
    render(Scene(objects=tuple(objects))).save(path)
    shape, colour = prompt
    metadata = {"tag": tag, "include": [{"class": shape, "count": 1, "color": colour}],
                "prompt": f"a photo of a {colour} {shape}"}
    return json.dumps({"filename": str(path), "tag": tag, "correct": correct, "metadata": json.dumps(metadata)})


def test_counts_where_the_unusual_colour_went(tmp_path):
    rows = [
        # asked for a red square: drew it (correct)
        _row(tmp_path, "a", [SceneObject("square", "red", 16, 16, 14)], ("square", "red"), True),
        # asked for a red square: drew the square blue, its usual colour, and a red circle
        _row(tmp_path, "b", [SceneObject("square", "blue", 8, 16, 12), SceneObject("circle", "red", 24, 16, 12)],
             ("square", "red"), False),
        # a usual pair and another task are not counted
        _row(tmp_path, "c", [SceneObject("square", "blue", 16, 16, 14)], ("square", "blue"), True),
        _row(tmp_path, "d", [SceneObject("square", "red", 16, 16, 14)], ("square", "red"), True, tag="color_attr"),
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(rows) + "\n")
    n, pct = colour_breakdown.breakdown(results, USUAL)
    assert n == 2
    assert pct == pytest.approx({"correct": 50.0, "shape_any_colour": 100.0, "shape_in_usual_colour": 50.0,
                                 "colour_any_shape": 100.0, "colour_on_other_shape": 50.0})
    table = colour_breakdown.markdown([("run", n, pct)])
    assert "| run | 2 | 50.0 | 100.0 | 50.0 | 100.0 | 50.0 |" in table
