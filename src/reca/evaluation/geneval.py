"""GenEval's scoring rules, with a pluggable detector and colour classifier.

Faithful to GenEval's ``evaluation/evaluate_images.py`` and
``evaluation/summary_scores.py`` (github.com/djghosh13/geneval). What GenEval
does, and what this module does the same way:

Detections (``select_objects``)
    * The detector returns, per class, boxes ``(x0, y0, x1, y1)`` with a
      confidence and optionally an instance mask (GenEval: Mask2Former).
    * Confidence threshold: strictly greater than 0.3, or 0.9 when the
      prompt's tag is ``counting``.
    * Per class, detections are sorted by confidence (most confident first)
      and at most 16 are kept.
    * Optional greedy NMS with ``max_overlap`` (IoU on inclusive pixel boxes,
      GenEval's ``compute_iou``); the default 1.0 turns it off, as in GenEval.

Prompt check (``evaluate_image``), clause by clause
    * ``include`` clauses are AND-ed. For ``{class, count}`` the
      ``count`` most confident objects of that class are taken; fewer than
      ``count`` fails ("expected X>=n, found m").
    * ``color``: those objects' colours are classified (GenEval: CLIP ViT-L-14
      zero-shot over GenEval's ten colours on the masked crop, the mask pasted
      on a #999 grey background and cropped to the box); fewer than ``count``
      of the required colour fails.
    * ``position: [relation, g]``: checked only if the clause matched so far;
      every taken object must stand in ``relation`` to every object of include
      group ``g`` (if group ``g`` failed, this clause fails too). The relation
      rule (``relative_position``): offset of the box centres, each axis
      shrunk towards 0 by ``0.1 × (width_a + width_b)`` (resp. heights); if
      both shrunk offsets are below 1e-3 there is no relation; otherwise, with
      ``(dx, dy) = shrunk / |offset|``, "left of" if ``dx < -0.5``, "right of"
      if ``dx > 0.5``, "above" if ``dy < -0.5``, "below" if ``dy > 0.5``.
    * ``exclude`` clauses are OR-ed: ``count`` or more detections of the class
      (after the threshold and the cap) fail the image. With the include
      clause this is how ``counting`` means "exactly k".

Summary (``summarize``)
    * Per task: "% correct images" (mean over images) and "% correct prompts"
      (a prompt is correct if any of its images is; prompts are grouped by
      their full metadata).
    * Overall score: the unweighted mean of the task accuracies over images.

The image and its detections are everything the rules see, so any detector
that fills :class:`Detection` plugs in (``reca.evaluation.detectors``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from reca.evaluation.geneval_prompts import GENEVAL_COLOURS, TASKS, metadata_key


@dataclass(frozen=True)
class Detection:
    """One detected object.

    Attributes:
        label: Class name (a COCO name, or a ShapeWorld shape).
        score: Confidence in ``[0, 1]``.
        box: ``(x0, y0, x1, y1)`` in pixels.
        mask: Boolean instance mask of the whole image ``(H, W)``, or ``None``.
    """

    label: str
    score: float
    box: tuple[float, float, float, float]
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


class Detector(Protocol):
    """Finds objects in images: GenEval's Mask2Former, or the exact ShapeWorld detector."""

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Detections of every class in each image (any order, no threshold applied)."""
        ...


class ColourClassifier(Protocol):
    """Names the colour of detected objects from their masked crops."""

    def classify(self, image: Image.Image, detections: Sequence[Detection], classname: str) -> list[str]:
        """One colour name (from GenEval's list) per detection."""
        ...


@dataclass(frozen=True)
class GenEvalRules:
    """GenEval's options (``--options`` of ``evaluate_images.py``), with its defaults."""

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0
    position_threshold: float = 0.1


#: GenEval's defaults
DEFAULT_RULES = GenEvalRules()


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two boxes on inclusive pixel coordinates (GenEval's ``compute_iou``: ``+1`` per side)."""

    def area(box: Sequence[float]) -> float:
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    inter = area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = area(a) + area(b) - inter
    return inter / union if union else 0.0


def select_objects(detections: Sequence[Detection], tag: str, rules: GenEvalRules = DEFAULT_RULES
                   ) -> dict[str, list[Detection]]:
    """Per class: above the task's threshold, most confident first, capped, optionally NMS-ed."""
    threshold = rules.counting_threshold if tag == "counting" else rules.threshold
    by_class: dict[str, list[Detection]] = defaultdict(list)
    for det in detections:
        by_class[det.label].append(det)
    selected = {}
    for label, dets in by_class.items():
        ordering = sorted((d for d in dets if d.score > threshold), key=lambda d: d.score, reverse=True)
        ordering = ordering[: rules.max_objects]
        kept: list[Detection] = []
        while ordering:
            best = ordering.pop(0)
            kept.append(best)
            if rules.max_overlap < 1:
                ordering = [d for d in ordering if box_iou(best.box, d.box) < rules.max_overlap]
        if kept:
            selected[label] = kept
    return selected


def relative_position(a: Detection | Sequence[float], b: Detection | Sequence[float],
                      threshold: float = 0.1) -> set[str]:
    """Relations of A to B ("left of", "right of", "above", "below") by GenEval's rule."""
    box_a = np.asarray(a.box if isinstance(a, Detection) else a, dtype=float)[:4].reshape(2, 2)
    box_b = np.asarray(b.box if isinstance(b, Detection) else b, dtype=float)[:4].reshape(2, 2)
    offset = box_a.mean(axis=0) - box_b.mean(axis=0)
    dims = np.abs(box_a[1] - box_a[0]) + np.abs(box_b[1] - box_b[0])
    revised = np.maximum(np.abs(offset) - threshold * dims, 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def _first_wrong_relation(found: Sequence[Detection], targets: Sequence[Detection], relation: str,
                          threshold: float) -> set[str] | None:
    """The relations of the first (object, target) pair lacking ``relation``; None if every pair has it."""
    for obj in found:
        for target in targets:
            actual = relative_position(obj, target, threshold)
            if relation not in actual:
                return actual
    return None


def evaluate_image(image: Image.Image, objects: Mapping[str, Sequence[Detection]], metadata: Mapping[str, Any],
                   colour_classifier: ColourClassifier, rules: GenEvalRules = DEFAULT_RULES
                   ) -> tuple[bool, str]:
    """Apply one prompt's include/exclude clauses to selected objects; return (correct, reason)."""
    correct = True
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []
    for clause in metadata.get("include", []):
        name, count = clause["class"], clause["count"]
        found = list(objects.get(name, []))[:count]
        matched = len(found) >= count
        if not matched:
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if "color" in clause:
                colours = colour_classifier.classify(image, found, name)
                if colours.count(clause["color"]) < count:
                    matched = False
                    seen = ", ".join(f"{colours.count(c)} {c}" for c in GENEVAL_COLOURS if c in colours)
                    reasons.append(f"expected {clause['color']} {name}>={count}, found "
                                   f"{colours.count(clause['color'])} {clause['color']}; and {seen}")
            if "position" in clause and matched:
                relation, group = clause["position"][0], int(clause["position"][1])
                targets = groups[group]
                if targets is None:
                    matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    actual = _first_wrong_relation(found, targets, relation, rules.position_threshold)
                    if actual is not None:
                        matched = False
                        reasons.append(f"expected {name} {relation} target, found "
                                       f"{' and '.join(sorted(actual))} target")
        correct = correct and matched
        groups.append(found if matched else None)
    for clause in metadata.get("exclude", []):
        name, count = clause["class"], clause["count"]
        if len(objects.get(name, [])) >= count:
            correct = False
            reasons.append(f"expected {name}<{count}, found {len(objects[name])}")
    return correct, "\n".join(reasons)


def score_image(image: Image.Image, detections: Sequence[Detection], metadata: Mapping[str, Any],
                colour_classifier: ColourClassifier, rules: GenEvalRules = DEFAULT_RULES,
                filename: str = "") -> dict[str, Any]:
    """One GenEval result row: ``filename, tag, prompt, correct, reason, metadata, details``."""
    objects = select_objects(detections, metadata["tag"], rules)
    correct, reason = evaluate_image(image, objects, metadata, colour_classifier, rules)
    return {
        "filename": filename,
        "tag": metadata["tag"],
        "prompt": metadata["prompt"],
        "correct": bool(correct),
        "reason": reason,
        "metadata": json.dumps(dict(metadata)),
        "details": json.dumps({k: [[*map(float, d.box), float(d.score)] for d in v] for k, v in objects.items()}),
    }


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """GenEval's summary: per task % correct images and prompts, and the mean over tasks.

    Returns:
        ``overall`` (mean of task image accuracies), ``images_correct`` and
        ``prompts_correct`` over everything, then per task present ``<task>``
        (image accuracy), ``<task>_prompts`` (prompt accuracy) and
        ``<task>_images`` (number of images), all accuracies in ``[0, 1]``.
        Tasks appear in GenEval's order, then any others in order of appearance.
    """
    if not rows:
        return {}
    by_task: dict[str, list[bool]] = defaultdict(list)
    by_prompt: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        by_task[row["tag"]].append(bool(row["correct"]))
        by_prompt[metadata_key(json.loads(row["metadata"]))].append(bool(row["correct"]))
    prompt_task = {metadata_key(json.loads(r["metadata"])): r["tag"] for r in rows}
    tasks = [t for t in TASKS if t in by_task] + [t for t in by_task if t not in TASKS]
    out: dict[str, Any] = {
        "overall": float(np.mean([np.mean(by_task[t]) for t in tasks])),
        "images_correct": float(np.mean([c for v in by_task.values() for c in v])),
        "prompts_correct": float(np.mean([any(v) for v in by_prompt.values()])),
    }
    for task in tasks:
        prompts = [any(v) for k, v in by_prompt.items() if prompt_task[k] == task]
        out[task] = float(np.mean(by_task[task]))
        out[f"{task}_prompts"] = float(np.mean(prompts))
        out[f"{task}_images"] = len(by_task[task])
    return out
