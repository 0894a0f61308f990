"""The paired bootstrap over prompts that says whether a difference between two models is noise."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from reca.evaluation.bootstrap import difference_intervals
from reca.evaluation.geneval_prompts import metadata_key


def _prompt(task: str, i: int, colour: str | None = None) -> dict:
    clause = {"class": "circle", "count": 1}
    if colour:
        clause["color"] = colour
    return {"tag": task, "include": [clause], "prompt": f"{task} {i}"}


def _rows(prompts: list[dict], correct: list[list[bool]]) -> list[dict]:
    return [{"tag": p["tag"], "metadata": json.dumps(p), "correct": c}
            for p, samples in zip(prompts, correct, strict=True) for c in samples]


def _random_rows(prompts, rate: float, seed: int, samples: int = 1):
    rng = np.random.default_rng(seed)
    return _rows(prompts, [list(rng.random(samples) < rate) for _ in prompts])


def test_the_same_scores_differ_by_exactly_nothing():
    prompts = [_prompt("single_object", i) for i in range(20)] + [_prompt("colors", i, "red") for i in range(20)]
    rows = _random_rows(prompts, 0.5, seed=0, samples=4)
    intervals = difference_intervals(rows, rows)
    assert set(intervals) == {"single_object", "colors", "overall"}
    assert all(interval == [0.0, 0.0] for interval in intervals.values())


def test_a_task_every_prompt_gets_right_differs_by_exactly_one_and_moves_overall_by_its_share():
    prompts = [_prompt("single_object", i) for i in range(10)] + [_prompt("counting", i) for i in range(10)]
    a = _rows(prompts, [[False]] * 10 + [[True]] * 10)
    b = _rows(prompts, [[True]] * 10 + [[True]] * 10)
    intervals = difference_intervals(a, b)
    assert intervals["single_object"] == [1.0, 1.0]
    assert intervals["counting"] == [0.0, 0.0]
    assert intervals["overall"] == [0.5, 0.5]  # the mean of two tasks


def test_the_interval_holds_zero_for_equal_models_and_not_for_a_real_gap():
    prompts = [_prompt("colors", i, "red") for i in range(400)]
    same = difference_intervals(_random_rows(prompts, 0.5, 1), _random_rows(prompts, 0.5, 2))
    lo, hi = same["colors"]
    assert lo < 0 < hi
    # its width is what the normal approximation gives for two independent rates over 400 prompts
    expected = 2 * 1.96 * math.sqrt(2 * 0.25 / 400)
    assert hi - lo == pytest.approx(expected, rel=0.2)
    gap = difference_intervals(_random_rows(prompts, 0.3, 1), _random_rows(prompts, 0.6, 2))
    assert gap["colors"][0] > 0.15


def test_usual_and_unusual_colours_get_intervals_of_their_own():
    prompts = [_prompt("colors", i, "red") for i in range(10)] + [_prompt("colors", 10 + i, "blue") for i in range(10)]
    usual = {metadata_key(p): p["include"][0]["color"] == "red" for p in prompts}
    a = _rows(prompts, [[True]] * 10 + [[False]] * 10)
    b = _rows(prompts, [[True]] * 10 + [[True]] * 10)
    intervals = difference_intervals(a, b, usual)
    assert intervals["colors_usual"] == [0.0, 0.0]
    assert intervals["colors_unusual"] == [1.0, 1.0]
    assert intervals["colors"] == pytest.approx([0.25, 0.75], abs=0.1)


def test_models_scored_on_different_prompts_have_no_paired_interval():
    a = _rows([_prompt("colors", 0, "red")], [[True]])
    b = _rows([_prompt("colors", 1, "red")], [[True]])
    with pytest.raises(ValueError, match="different prompts"):
        difference_intervals(a, b)
