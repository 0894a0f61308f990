"""How sure a difference between two models is: a paired bootstrap over prompts.

Both models are scored on the same prompts with the same seeds, so the
question is whether the difference would survive another draw of prompts.
Each resample draws, within every task, as many prompts as the task has,
with replacement (GenEval's tasks are fixed; the prompts inside them are the
sample), and recomputes each metric for both models on that one set of
prompts, every sample of a drawn prompt included. The 2.5th and 97.5th
percentiles of the differences are the 95% interval: an interval that holds
0 says the difference may be noise.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from reca.evaluation.geneval_prompts import TASKS, metadata_key

RESAMPLES = 2000
SEED = 0


def _tallies(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Correct and total images of each prompt in ``keys`` (in that order)."""
    position = {k: i for i, k in enumerate(keys)}
    correct, total = np.zeros(len(keys)), np.zeros(len(keys))
    for row in rows:
        i = position[metadata_key(json.loads(row["metadata"]))]
        correct[i] += bool(row["correct"])
        total[i] += 1
    return correct, total


def _groups(rows: Sequence[Mapping[str, Any]], usual: Mapping[str, bool]) -> tuple[list[str], dict[str, list[int]]]:
    """Prompt keys in first-seen order and, per metric, which of them it averages over."""
    keys: list[str] = []
    task_of: dict[str, str] = {}
    for row in rows:
        key = metadata_key(json.loads(row["metadata"]))
        if key not in task_of:
            task_of[key] = row["tag"]
            keys.append(key)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[task_of[key]].append(i)
        if task_of[key] in ("colors", "color_attr") and key in usual:
            groups[f"{task_of[key]}_{'usual' if usual[key] else 'unusual'}"].append(i)
    return keys, dict(groups)


def difference_intervals(rows_a: Sequence[Mapping[str, Any]], rows_b: Sequence[Mapping[str, Any]],
                         usual: Mapping[str, bool] | None = None, *, resamples: int = RESAMPLES,
                         seed: int = SEED, level: float = 0.95) -> dict[str, list[float]]:
    """95% intervals of ``b - a`` for ``overall``, every task and the usual/unusual colour buckets.

    ``rows_*`` are the per-image results rows of the two models on the same
    prompts (``tag``, ``metadata``, ``correct``); ``usual`` maps a prompt's
    metadata key to whether all its colours are usual (as
    :func:`reca.evaluation.geneval_prompts.usual_colour_split`). Values are
    fractions, like the metrics.
    """
    keys, groups = _groups(rows_a, usual or {})
    if {metadata_key(json.loads(r["metadata"])) for r in rows_b} != set(keys):
        raise ValueError("the two models were scored on different prompts: their difference has no paired interval")
    ca, na = _tallies(rows_a, keys)
    cb, nb = _tallies(rows_b, keys)
    tasks = [t for t in TASKS if t in groups] + [t for t in groups if t not in TASKS and "_" not in t]
    rng = np.random.default_rng(seed)
    # counts[r, p]: how often resample r drew prompt p (stratified by task)
    counts = np.zeros((resamples, len(keys)))
    for task in tasks:
        members = np.asarray(groups[task])
        drawn = rng.integers(0, len(members), size=(resamples, len(members)))
        np.add.at(counts, (np.arange(resamples)[:, None], members[drawn]), 1.0)

    def accuracy(correct: np.ndarray, total: np.ndarray, members: Sequence[int]) -> np.ndarray:
        m = np.asarray(members)
        images = counts[:, m] @ total[m]
        return np.divide(counts[:, m] @ correct[m], images, out=np.full(resamples, np.nan), where=images > 0)

    diffs: dict[str, np.ndarray] = {}
    for name, members in groups.items():
        diffs[name] = accuracy(cb, nb, members) - accuracy(ca, na, members)
    diffs["overall"] = np.mean([diffs[t] for t in tasks], axis=0)
    tail = 100 * (1 - level) / 2
    out = {}
    for name, d in diffs.items():
        d = d[~np.isnan(d)]
        if len(d):
            out[name] = [float(np.percentile(d, tail)), float(np.percentile(d, 100 - tail))]
    return out
