"""Tests for compositional text-to-image scoring."""

from __future__ import annotations

import pytest

from reca.data.shapeworld import Scene, SceneObject, eval_prompts, render
from reca.evaluation.compositional import aggregate, score_image
from reca.evaluation.shapeworld_detector import Detection, detect

TWO = {
    "prompt": "a green triangle left of a purple circle",
    "objects": [{"shape": "triangle", "colour": "green"}, {"shape": "circle", "colour": "purple"}],
    "relation": "left_of",
    "usual": False,
}
ONE = {
    "prompt": "a blue square",
    "objects": [{"shape": "square", "colour": "blue"}],
    "relation": None,
    "usual": True,
}


def _obj(shape: str, colour: str, cx: float) -> SceneObject:
    return SceneObject(shape, colour, cx=cx, cy=16.0, size=11)


def _det(shape: str, colour: str, x: float, area: int = 100) -> Detection:
    return Detection(shape, colour, bbox=(0, 0, 1, 1), centroid=(x, 16.0), area=area, score=1.0)


def test_rendered_prompt_scores_correct() -> None:
    for prompt in eval_prompts(seed=3, n_single=18, n_two=20):
        objects = prompt["objects"]
        xs = [8.5, 24.5] if len(objects) == 2 else [16.5]
        scene = Scene(tuple(_obj(o["shape"], o["colour"], x) for o, x in zip(objects, xs, strict=True)))
        scores = score_image(prompt, detect(render(scene)))
        assert scores["correct"], (prompt["prompt"], scores)
        assert ("position" in scores) == (len(objects) == 2)


def test_swapped_positions_fail_position_only() -> None:
    scene = Scene((_obj("circle", "purple", 8.5), _obj("triangle", "green", 24.5)))
    scores = score_image(TWO, detect(render(scene)))
    assert scores == {
        "object": True,
        "shape": True,
        "colour": True,
        "count": True,
        "position": False,
        "correct": False,
    }


def test_wrong_colour_fails_colour() -> None:
    scene = Scene((_obj("triangle", "green", 8.5), _obj("circle", "red", 24.5)))
    scores = score_image(TWO, detect(render(scene)))
    assert scores["shape"] and scores["count"]
    assert not scores["colour"] and not scores["object"] and not scores["correct"]

    single = score_image(ONE, detect(render(Scene((_obj("square", "red", 16.5),)))))
    assert single == {"object": False, "shape": True, "colour": False, "count": True, "correct": False}


def test_single_object_colour_uses_largest_detection() -> None:
    scores = score_image(ONE, [_det("circle", "blue", 10.0, area=90), _det("triangle", "red", 20.0, area=30)])
    assert scores["colour"] and not scores["shape"] and not scores["object"] and not scores["count"]


def test_extra_object_fails_count_only() -> None:
    dets = [
        _det("triangle", "green", 5.0),
        _det("circle", "purple", 20.0),
        _det("square", "red", 28.0, area=40),
    ]
    scores = score_image(TWO, dets)
    assert not scores["count"] and not scores["correct"]
    assert scores["object"] and scores["colour"] and scores["position"]


def test_missing_object_fails() -> None:
    scores = score_image(TWO, [_det("triangle", "green", 5.0)])
    assert not scores["object"] and not scores["shape"] and not scores["position"]
    assert score_image(ONE, [])["correct"] is False


def test_aggregate_on_hand_built_records() -> None:
    unusual = {
        **ONE,
        "prompt": "a red square",
        "objects": [{"shape": "square", "colour": "red"}],
        "usual": False,
    }
    records = [
        {
            "prompt": ONE,
            "scores": {"object": True, "shape": True, "colour": True, "count": True, "correct": True},
        },
        {
            "prompt": ONE,
            "scores": {"object": False, "shape": True, "colour": False, "count": True, "correct": False},
        },
        {
            "prompt": unusual,
            "scores": {"object": False, "shape": True, "colour": False, "count": True, "correct": False},
        },
        {
            "prompt": unusual,
            "scores": {"object": False, "shape": True, "colour": False, "count": True, "correct": False},
        },
        {
            "prompt": TWO,
            "scores": {
                "object": True,
                "shape": True,
                "colour": True,
                "count": True,
                "position": True,
                "correct": True,
            },
        },
        {
            "prompt": TWO,
            "scores": {
                "object": True,
                "shape": True,
                "colour": True,
                "count": True,
                "position": False,
                "correct": False,
            },
        },
    ]
    result = aggregate(records)
    assert result == pytest.approx(
        {
            "single_object": 0.25,
            "two_object": 0.5,
            "position": 0.5,
            "colour": 0.5,
            "usual_colour": 0.5,
            "unusual_colour": 0.0,
            "overall": 2 / 6,
        }
    )


def test_aggregate_omits_empty_groups() -> None:
    record = {
        "prompt": ONE,
        "scores": {"object": True, "shape": True, "colour": True, "count": True, "correct": True},
    }
    assert aggregate([record]) == {"single_object": 1.0, "colour": 1.0, "usual_colour": 1.0, "overall": 1.0}
    assert aggregate([]) == {}
