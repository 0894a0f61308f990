"""scripts/object_breakdown.py: why multi-object prompts failed, re-read by the detector."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from reca.shapeworld.world import Scene, SceneObject, render
from reca_fixtures import REPO

spec = importlib.util.spec_from_file_location("object_breakdown", REPO / "scripts" / "object_breakdown.py")
object_breakdown = importlib.util.module_from_spec(spec)
spec.loader.exec_module(object_breakdown)

WORLD = {"colours": ["red", "blue", "green"], "shapes": ["square", "circle", "triangle"]}


def _row(tmp_path: Path, name: str, objects: list[SceneObject], include: list[dict], correct: bool,
         tag: str) -> str:
    path = tmp_path / f"{name}.png"
    render(Scene(objects=tuple(objects))).save(path)
    metadata = {"tag": tag, "include": include, "prompt": name}
    return json.dumps({"filename": str(path), "tag": tag, "correct": correct, "metadata": json.dumps(metadata)})


def test_classify_separates_missing_extra_and_badly_drawn_objects():
    asked = {"square": 2}
    assert object_breakdown.classify([("square", 0.95)], asked, 0.9) == "fewer_objects"
    assert object_breakdown.classify([("square", 0.95)] * 3, asked, 0.9) == "more_objects"
    assert object_breakdown.classify([("square", 0.95), ("circle", 0.95)], asked, 0.9) == "shape_wrong"
    # a square drawn too sloppily for counting's 0.9 is a shape failure, not a missing object
    assert object_breakdown.classify([("square", 0.95), ("square", 0.85)], asked, 0.9) == "shape_wrong"
    assert object_breakdown.classify([("square", 0.95), ("square", 0.85)], asked, 0.8) is None


def test_breakdown_of_rendered_failures(tmp_path):
    squares = [{"class": "square", "count": 2}]
    pair = [{"class": "square", "count": 1}, {"class": "circle", "count": 1}]
    rows = [
        _row(tmp_path, "ok", [SceneObject("square", "red", 8, 8, 12), SceneObject("square", "red", 24, 24, 12)],
             squares, True, "counting"),
        _row(tmp_path, "one", [SceneObject("square", "red", 8, 8, 12)], squares, False, "counting"),
        _row(tmp_path, "wrong", [SceneObject("square", "red", 8, 8, 12), SceneObject("circle", "red", 24, 24, 12)],
             squares, False, "counting"),
        # the right shapes, wrong colours: a failure, but not one of the object classes
        _row(tmp_path, "colour", [SceneObject("square", "red", 8, 8, 12), SceneObject("circle", "blue", 24, 24, 12)],
             pair, False, "two_object"),
        _row(tmp_path, "single", [SceneObject("square", "red", 16, 16, 12)], [{"class": "square", "count": 1}],
             False, "single_object"),
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(rows) + "\n")
    table = object_breakdown.breakdown(results, **WORLD)
    assert set(table) == {"counting", "two_object"}
    n, pct = table["counting"]
    assert n == 3
    assert pct["correct"] == pytest.approx(100 / 3)
    assert pct["fewer_objects"] == pytest.approx(100 / 3)
    assert pct["shape_wrong"] == pytest.approx(100 / 3)
    assert pct["more_objects"] == 0.0
    assert pct["iou"] == pytest.approx(1.0)  # rendered shapes match their templates exactly
    n, pct = table["two_object"]
    assert n == 1 and pct == pytest.approx({"correct": 0.0, "fewer_objects": 0.0, "more_objects": 0.0,
                                            "shape_wrong": 0.0, "iou": 1.0})
    markdown = object_breakdown.markdown([("run", table)])
    assert "| run | counting | 3 | 33.3 | 33.3 | 0.0 | 33.3 | 1.000 |" in markdown


def test_main_reads_the_world_and_thresholds_from_params(tmp_path, capsys):
    # GenEval marked this image wrong although it holds the two squares asked for
    rows = [_row(tmp_path, "sloppy", [SceneObject("square", "red", 8, 8, 12), SceneObject("square", "red", 24, 24, 12)],
                 [{"class": "square", "count": 2}], False, "counting")]
    run = tmp_path / "run" / "report" / "model"
    run.mkdir(parents=True)
    (run / "results.jsonl").write_text("\n".join(rows) + "\n")
    params = tmp_path / "params.yaml"
    params.write_text("evaluate:\n  classes: [square, circle]\n  colours: [red, blue]\n")
    assert object_breakdown.main([str(tmp_path / "run"), "--params", str(params)]) == 0
    out = capsys.readouterr().out
    # both squares are perfect, so the failure was not about objects
    assert f"| {tmp_path / 'run'} | counting | 1 | 0.0 | 0.0 | 0.0 | 0.0 | 1.000 |" in out
    params.write_text("evaluate:\n  classes: [circle, triangle]\n  colours: [red, blue]\n")
    object_breakdown.main([str(tmp_path / "run"), "--params", str(params)])
    # a world without squares reads both as another shape
    assert f"| {tmp_path / 'run'} | counting | 1 | 0.0 | 0.0 | 0.0 | 100.0 |" in capsys.readouterr().out
