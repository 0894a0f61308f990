"""Compositional scoring of ShapeWorld text-to-image outputs.

Given a prompt from :func:`reca.data.shapeworld.eval_prompts` and the
detections in the image a model generated for it, :func:`score_image` checks
object presence, shape, colour binding, object count and (for two-object
prompts) left/right position. :func:`aggregate` turns many scored images into
accuracies, including colour accuracy on usual versus unusual colour pairs,
which is where a biased captioned split shows up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from reca.evaluation.shapeworld_detector import Detection


def _requested(prompt: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(str(obj["shape"]), str(obj["colour"])) for obj in prompt["objects"]]


def _colour_ok(requested: list[tuple[str, str]], detections: Sequence[Detection]) -> bool:
    if len(requested) == 1:
        # Single-object prompts: judge colour on the dominant object only, so a
        # wrong shape in the right colour still counts as right colour.
        return bool(detections) and detections[0].colour == requested[0][1]
    by_area = sorted(detections, key=lambda d: d.area, reverse=True)
    for shape in {s for s, _ in requested}:
        wanted = Counter(c for s, c in requested if s == shape)
        k = sum(wanted.values())
        # The k largest detections of this shape stand for the k requested
        # objects of this shape; smaller extra blobs are left to `count`.
        found = [d.colour for d in by_area if d.shape == shape][:k]
        if Counter(found) != wanted:
            return False
    return True


def _position_ok(requested: list[tuple[str, str]], detections: Sequence[Detection]) -> bool:
    by_area = sorted(detections, key=lambda d: d.area, reverse=True)
    chosen: list[Detection] = []
    for shape, colour in requested[:2]:
        match = next(
            (
                d
                for d in by_area
                if d.shape == shape and d.colour == colour and all(d is not c for c in chosen)
            ),
            None,
        )
        if match is None:
            return False
        chosen.append(match)
    return chosen[0].centroid[0] < chosen[1].centroid[0]


def score_image(prompt: Mapping[str, Any], detections: Sequence[Detection]) -> dict[str, bool]:
    """Score one generated image against its prompt.

    Args:
        prompt: A prompt dict from ``eval_prompts`` (keys ``objects`` and
            ``relation`` are used).
        detections: Detections in the generated image, largest first (as
            returned by ``detect``).

    Returns:
        A dict with boolean keys:

        * ``object``: every requested (shape, colour) object is detected;
        * ``shape``: every requested shape is detected in some colour (counted
          with multiplicity, so two requested circles need two circles);
        * ``colour``: single-object prompts: the largest detection has the
          requested colour; several objects: for each requested shape, the
          largest detections of that shape carry the requested colours;
        * ``count``: the number of detections equals the number of objects;
        * ``position``: only when ``relation == "left_of"``: the first-named
          object's centroid is left of the second-named object's;
        * ``correct``: all of the above are True.
    """
    requested = _requested(prompt)
    detected = Counter((d.shape, d.colour) for d in detections)
    detected_shapes = Counter(d.shape for d in detections)
    scores: dict[str, bool] = {
        "object": all(detected[pair] >= n for pair, n in Counter(requested).items()),
        "shape": all(detected_shapes[shape] >= n for shape, n in Counter(s for s, _ in requested).items()),
        "colour": _colour_ok(requested, detections),
        "count": len(detections) == len(requested),
    }
    if prompt.get("relation") == "left_of":
        scores["position"] = len(requested) >= 2 and _position_ok(requested, detections)
    scores["correct"] = all(scores.values())
    return scores


def _rate(values: list[bool]) -> float:
    return sum(values) / len(values)


def aggregate(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Summarise scored images as accuracies.

    Args:
        records: Dicts ``{"prompt": prompt, "scores": score_image(...)}``.

    Returns:
        Accuracies in ``[0, 1]``; keys whose subset is empty are omitted:

        * ``single_object``: correct rate on single-object prompts;
        * ``two_object``: correct rate on two-object prompts;
        * ``position``: position accuracy where position was scored;
        * ``colour``: colour accuracy over all prompts;
        * ``usual_colour`` / ``unusual_colour``: colour accuracy on
          single-object prompts whose colour is / is not the shape's usual one;
        * ``overall``: correct rate over all prompts.
    """
    buckets: dict[str, list[bool]] = {
        "single_object": [],
        "two_object": [],
        "position": [],
        "colour": [],
        "usual_colour": [],
        "unusual_colour": [],
        "overall": [],
    }
    for record in records:
        prompt, scores = record["prompt"], record["scores"]
        n_objects = len(prompt["objects"])
        if n_objects == 1:
            buckets["single_object"].append(bool(scores["correct"]))
            key = "usual_colour" if prompt.get("usual") else "unusual_colour"
            buckets[key].append(bool(scores["colour"]))
        elif n_objects == 2:
            buckets["two_object"].append(bool(scores["correct"]))
        if "position" in scores:
            buckets["position"].append(bool(scores["position"]))
        buckets["colour"].append(bool(scores["colour"]))
        buckets["overall"].append(bool(scores["correct"]))
    return {key: _rate(values) for key, values in buckets.items() if values}
