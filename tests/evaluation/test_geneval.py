"""Tests for GenEval's scoring rules (reca.evaluation.geneval)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from reca.evaluation.geneval import (
    DEFAULT_RULES,
    Detection,
    GenEvalRules,
    evaluate_image,
    relative_position,
    score_image,
    select_objects,
    summarize,
)
from reca.evaluation.geneval_prompts import (
    color_attr_prompt,
    colors_prompt,
    counting_prompt,
    position_prompt,
    two_object_prompt,
)

IMAGE = Image.new("RGB", (100, 100))


class LabelColours:
    """A colour classifier that returns the colour each test detection was made with."""

    def __init__(self):
        self.calls = []

    def classify(self, image, detections, classname):
        self.calls.append((classname, len(detections)))
        return [d.colour for d in detections]


def det(label: str, score: float = 0.95, box=(10, 10, 20, 20), colour: str = "red") -> Detection:
    d = Detection(label=label, score=score, box=tuple(float(v) for v in box))
    # The test's colour classifier reads this back: colour is a fact of the test image here.
    object.__setattr__(d, "colour", colour)
    return d


def check(metadata, detections, rules=DEFAULT_RULES, colours=None):
    return evaluate_image(IMAGE, select_objects(detections, metadata["tag"], rules), metadata,
                          colours or LabelColours(), rules)


def test_relative_position_rule_with_threshold() -> None:
    a, b = (0, 40, 10, 50), (40, 40, 50, 50)
    assert relative_position(a, b) == {"left of"}
    assert relative_position(b, a) == {"right of"}
    assert relative_position((40, 0, 50, 10), (40, 40, 50, 50)) == {"above"}
    assert relative_position((30, 30, 40, 40), (0, 0, 10, 10)) == {"right of", "below"}
    # Centres 1.5 apart with widths 10 + 10: the 0.1 margin (2 px) swallows the offset.
    assert relative_position((0, 0, 10, 10), (1.5, 0, 11.5, 10)) == set()
    # Mostly vertical offset: dx is shrunk by the margin and divided by the full offset.
    assert relative_position((0, 0, 10, 10), (4, 30, 14, 40)) == {"above"}
    assert relative_position((0, 0, 10, 10), (1.5, 0, 11.5, 10), threshold=0.0) == {"left of"}


def test_threshold_is_strict_and_per_task_and_keeps_16_most_confident() -> None:
    dets = [det("circle", 0.3), det("circle", 0.31), det("circle", 0.5), det("square", 0.95)]
    assert [d.score for d in select_objects(dets, "colors")["circle"]] == [0.5, 0.31]
    assert set(select_objects(dets, "counting")) == {"square"}
    many = [det("circle", 0.5 + i / 100) for i in range(20)]
    kept = select_objects(many, "single_object")["circle"]
    assert len(kept) == 16 and kept[0].score == pytest.approx(0.69) and kept[-1].score == pytest.approx(0.54)


def test_nms_only_when_max_overlap_below_one() -> None:
    dets = [det("circle", 0.9, (0, 0, 10, 10)), det("circle", 0.8, (1, 1, 11, 11))]
    assert len(select_objects(dets, "single_object")["circle"]) == 2
    assert len(select_objects(dets, "single_object", GenEvalRules(max_overlap=0.5))["circle"]) == 1


def test_counting_means_exactly_through_include_and_exclude() -> None:
    prompt = counting_prompt("circle", 3)
    assert check(prompt, [det("circle")] * 3)[0]
    ok, reason = check(prompt, [det("circle")] * 2)
    assert not ok and "expected circle>=3, found 2" in reason
    ok, reason = check(prompt, [det("circle")] * 4)
    assert not ok and "expected circle<4, found 4" in reason
    # The counting threshold is 0.9: a 0.85 detection does not count.
    assert not check(prompt, [det("circle")] * 2 + [det("circle", 0.85)])[0]
    assert check(prompt, [det("circle")] * 3 + [det("circle", 0.85)])[0]


def test_colour_is_judged_on_the_most_confident_objects_only() -> None:
    prompt = colors_prompt("circle", "red")
    colours = LabelColours()
    assert check(prompt, [det("circle", 0.9, colour="red"), det("circle", 0.8, colour="blue")], colours=colours)[0]
    assert colours.calls == [("circle", 1)]
    ok, reason = check(prompt, [det("circle", 0.8, colour="red"), det("circle", 0.9, colour="blue")])
    assert not ok and "expected red circle>=1, found 0 red; and 1 blue" in reason


def test_color_attr_needs_both_colours_and_two_object_needs_both_classes() -> None:
    prompt = color_attr_prompt("circle", "red", "square", "blue")
    assert check(prompt, [det("circle", colour="red"), det("square", colour="blue")])[0]
    assert not check(prompt, [det("circle", colour="blue"), det("square", colour="red")])[0]
    assert check(two_object_prompt("circle", "square"), [det("circle"), det("square"), det("cross")])[0]
    assert not check(two_object_prompt("circle", "square"), [det("circle")])[0]


def test_position_is_relative_to_the_referenced_group() -> None:
    prompt = position_prompt("circle", "left of", "square")  # include [square, circle left of group 0]
    assert check(prompt, [det("circle", box=(0, 40, 10, 50)), det("square", box=(40, 40, 50, 50))])[0]
    ok, reason = check(prompt, [det("circle", box=(40, 40, 50, 50)), det("square", box=(0, 40, 10, 50))])
    assert not ok and "expected circle left of target, found right of target" in reason
    ok, reason = check(prompt, [det("circle", box=(0, 40, 10, 50))])
    assert not ok and "expected square>=1, found 0" in reason and "no target for circle" in reason


def test_score_image_row_has_genevals_fields() -> None:
    prompt = two_object_prompt("circle", "square")
    row = score_image(IMAGE, [det("circle", 0.2), det("circle", 0.9), det("square")], prompt, LabelColours(),
                      filename="x/00000.png")
    assert set(row) == {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"}
    assert row["correct"] and json.loads(row["metadata"]) == prompt
    assert json.loads(row["details"])["circle"] == [[10.0, 10.0, 20.0, 20.0, 0.9]]


def test_summary_is_the_unweighted_mean_of_tasks_and_prompts_pass_if_any_image_does() -> None:
    one, two = colors_prompt("circle", "red"), colors_prompt("square", "red")
    rows = [
        {"tag": "colors", "metadata": json.dumps(one), "correct": True},
        {"tag": "colors", "metadata": json.dumps(one), "correct": False},
        {"tag": "colors", "metadata": json.dumps(two), "correct": False},
        {"tag": "colors", "metadata": json.dumps(two), "correct": False},
        {"tag": "counting", "metadata": json.dumps(counting_prompt("circle", 2)), "correct": True},
    ]
    summary = summarize(rows)
    assert summary["colors"] == 0.25 and summary["colors_prompts"] == 0.5 and summary["colors_images"] == 4
    assert summary["counting"] == 1.0 and summary["counting_prompts"] == 1.0
    assert summary["overall"] == pytest.approx((0.25 + 1.0) / 2)
    assert summary["images_correct"] == pytest.approx(2 / 5)
    assert summary["prompts_correct"] == pytest.approx(2 / 3)
    assert list(summary)[3:5] == ["counting", "counting_prompts"]
    assert summarize([]) == {}
