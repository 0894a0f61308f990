"""Tests for GenEval's prompt recipe and metadata files (reca.evaluation.geneval_prompts)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from reca.evaluation.geneval_prompts import (
    create_prompts,
    load_metadata,
    make_plural,
    usual_colour_split,
    with_article,
    write_metadata,
)

# GenEval's class list (COCO's 80 in COCO order, with GenEval's names for a few).
COCO = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]
SHAPES = ["circle", "square", "triangle", "diamond", "cross"]


def test_recipe_reproduces_the_official_553_prompts_on_coco_names() -> None:
    prompts = create_prompts(COCO)
    assert len(prompts) == 553
    assert Counter(p["tag"] for p in prompts) == {
        "single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100, "color_attr": 100,
    }
    # The first lines of GenEval's evaluation_metadata.jsonl.
    assert [p["prompt"] for p in prompts[:4]] == [
        "a photo of a bench", "a photo of a cow", "a photo of a bicycle", "a photo of a clock",
    ]
    counting = next(p for p in prompts if p["tag"] == "counting")
    assert counting == {"tag": "counting", "include": [{"class": "clock", "count": 2}],
                        "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"}
    assert not any(c.get("color") and c["class"] == "person" for p in prompts for c in p["include"])


def test_prompt_shapes_follow_genevals_grammar() -> None:
    prompts = create_prompts(SHAPES, colours=["red", "orange", "blue"], n_per_task=30)
    by_tag = {p["tag"]: p for p in prompts}
    assert set(by_tag) == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    position = by_tag["position"]
    a, b = position["include"][1]["class"], position["include"][0]["class"]
    relation = position["include"][1]["position"]
    assert relation[1] == 0
    assert position["prompt"] == f"a photo of a {a} {relation[0]} a {b}"
    assert all(p["prompt"].startswith("a photo of ") for p in prompts)
    assert any("an orange" in p["prompt"] for p in prompts)
    assert len({json.dumps(p, sort_keys=True) for p in prompts}) == len(prompts)
    assert create_prompts(SHAPES, n_per_task=30) == create_prompts(SHAPES, n_per_task=30)
    assert create_prompts(SHAPES, n_per_task=30, seed=1) != create_prompts(SHAPES, n_per_task=30)


def test_articles_and_plurals() -> None:
    assert with_article("apple") == "an apple" and with_article("cross") == "a cross"
    assert make_plural("cross") == "crosses" and make_plural("circle") == "circles"


def test_too_small_a_vocabulary_is_refused() -> None:
    with pytest.raises(ValueError, match="two distinct"):
        create_prompts(["circle"])
    with pytest.raises(ValueError, match="max_count"):
        create_prompts(SHAPES, max_count=1)


def test_metadata_round_trip_and_errors_name_the_line(tmp_path: Path) -> None:
    prompts = create_prompts(SHAPES, n_per_task=5)
    path = write_metadata(tmp_path / "evaluation_metadata.jsonl", prompts)
    assert load_metadata(path) == json.loads(json.dumps(prompts))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(prompts[0]) + "\n" + json.dumps({"tag": "x", "prompt": "p", "include": [
        {"class": "a", "count": 1, "position": ["near", 0]}]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*unknown relation"):
        load_metadata(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: not JSON"):
        load_metadata(bad)
    with pytest.raises(FileNotFoundError):
        load_metadata(tmp_path / "missing.jsonl")


def test_usual_colour_split_marks_prompts_with_any_unusual_colour() -> None:
    usual = {"circle": "red", "square": "blue"}
    prompts = create_prompts(["circle", "square"], colours=["red", "blue"], n_per_task=40)
    split = usual_colour_split(prompts, usual)
    for prompt in prompts:
        coloured = [c for c in prompt["include"] if "color" in c]
        key = json.dumps(prompt, sort_keys=True)
        assert (key in split) == bool(coloured)
        if coloured:
            assert split[key] == all(usual[c["class"]] == c["color"] for c in coloured)
    assert set(split.values()) == {True, False}
