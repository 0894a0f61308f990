"""GenEval's prompt recipe over any vocabulary, and GenEval metadata files.

GenEval (Ghosh et al., 2023; ``prompts/create_prompts.py`` in
github.com/djghosh13/geneval) asks six questions of a text-to-image model.
Each prompt is one JSON object (one line of ``evaluation_metadata.jsonl``)::

    {"tag": "counting", "include": [{"class": "clock", "count": 2}],
     "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"}

What the recipe does, rule by rule (this module does the same, over the class
names and colours it is given instead of COCO's 80 names):

* ``single_object``: every class once, in the order of
  ``rng.choice(n, size=n, replace=False)``: "a photo of a bench".
* ``two_object``: two distinct classes (``rng.choice(n, 2, replace=False)``):
  "a photo of a cow and a bicycle"; include both with count 1.
* ``counting``: one class (``rng.choice(n)``) and a number drawn by
  ``rng.integers(2, max_count, endpoint=True)`` (2 to 4): "a photo of three
  clocks"; include ``count = k`` and exclude ``count = k + 1``, which together
  mean "exactly k".
* ``colors``: a class other than "person" (``rng.choice(n - 1) + 1`` shifted
  past the index of "person") and a colour (``rng.choice(10)``): "a photo of
  a pink car"; include with ``color``.
* ``position``: two distinct classes A, B (``rng.choice(n, 2,
  replace=False)``) and a relation among "left of", "right of", "above",
  "below": "a photo of a A <relation> a B"; include ``[B, A]`` where A carries
  ``position: [relation, 0]`` (relative to include group 0, i.e. B).
* ``color_attr``: two distinct non-"person" classes and two distinct colours:
  "a photo of a red A and a blue B".
* Articles: "an" before a vowel-initial word; plurals add "es" after a
  trailing "s", else "s".
* The suite: all single-object prompts, then ``n`` (default 100) draws of
  each other task in the order above, all from one ``np.random.default_rng``
  (GenEval's seed is 43), then exact duplicates removed (first kept). On
  COCO's names this gives the official 553 prompts (80 + 99 + 80 + 94 + 100 +
  100).

A vocabulary without "person" skips the "no colour for person" shift (GenEval
would fail there); with "person" present, the draws match GenEval's exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reca.fileio import atomic_path
from reca.vocabulary import GENEVAL_COLOURS  # GenEval's ten colours, shared with the schema and the world

#: GenEval's spatial relations
POSITIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
NUMBERS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
#: the six tasks, in the order the recipe draws them
TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
#: GenEval never asks for the colour of this class
UNCOLOURED_CLASS = "person"
#: GenEval's seed for the official prompt set
GENEVAL_SEED = 43


def with_article(word: str) -> str:
    """"an apple", "a bench": GenEval's article rule (vowel-initial words take "an")."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def make_plural(word: str) -> str:
    """"buses", "clocks": GenEval's plural rule."""
    return f"{word}es" if word.endswith("s") else f"{word}s"


def _photo(text: str) -> str:
    return f"a photo of {text}"


def single_object_prompt(cls: str) -> dict[str, Any]:
    """Metadata of "a photo of a <cls>"."""
    return {"tag": "single_object", "include": [{"class": cls, "count": 1}], "prompt": _photo(with_article(cls))}


def two_object_prompt(cls_a: str, cls_b: str) -> dict[str, Any]:
    """Metadata of "a photo of a <a> and a <b>"."""
    return {
        "tag": "two_object",
        "include": [{"class": cls_a, "count": 1}, {"class": cls_b, "count": 1}],
        "prompt": _photo(f"{with_article(cls_a)} and {with_article(cls_b)}"),
    }


def counting_prompt(cls: str, count: int) -> dict[str, Any]:
    """Metadata of "a photo of <count> <cls>s": at least ``count`` and fewer than ``count + 1``."""
    if not 0 <= count < len(NUMBERS) - 1:
        raise ValueError(f"count must be in [0, {len(NUMBERS) - 2}], got {count}")
    return {
        "tag": "counting",
        "include": [{"class": cls, "count": count}],
        "exclude": [{"class": cls, "count": count + 1}],
        "prompt": _photo(f"{NUMBERS[count]} {make_plural(cls)}"),
    }


def colors_prompt(cls: str, colour: str) -> dict[str, Any]:
    """Metadata of "a photo of a <colour> <cls>"."""
    return {
        "tag": "colors",
        "include": [{"class": cls, "count": 1, "color": colour}],
        "prompt": _photo(f"{with_article(colour)} {cls}"),
    }


def position_prompt(cls_a: str, relation: str, cls_b: str) -> dict[str, Any]:
    """Metadata of "a photo of a <a> <relation> a <b>": include ``[b, a]``, ``a`` relative to group 0."""
    if relation not in POSITIONS:
        raise ValueError(f"unknown relation {relation!r}; GenEval's are {list(POSITIONS)}")
    return {
        "tag": "position",
        "include": [{"class": cls_b, "count": 1}, {"class": cls_a, "count": 1, "position": [relation, 0]}],
        "prompt": _photo(f"{with_article(cls_a)} {relation} {with_article(cls_b)}"),
    }


def color_attr_prompt(cls_a: str, colour_a: str, cls_b: str, colour_b: str) -> dict[str, Any]:
    """Metadata of "a photo of a <colour_a> <a> and a <colour_b> <b>"."""
    return {
        "tag": "color_attr",
        "include": [
            {"class": cls_a, "count": 1, "color": colour_a},
            {"class": cls_b, "count": 1, "color": colour_b},
        ],
        "prompt": _photo(f"{with_article(colour_a)} {cls_a} and {with_article(colour_b)} {cls_b}"),
    }


def _colourable(rng: np.random.Generator, classes: Sequence[str], size: int | None) -> Any:
    """Draw class indices GenEval's way, never landing on "person" when it is present."""
    n = len(classes)
    if UNCOLOURED_CLASS not in classes:
        return rng.choice(n, size=size, replace=False) if size else rng.choice(n)
    # GenEval draws from n - 1 indices, adds 1 and rotates by the index of "person".
    drawn = (rng.choice(n - 1, size=size, replace=False) if size else rng.choice(n - 1)) + 1
    return (drawn + classes.index(UNCOLOURED_CLASS)) % n


def create_prompts(
    classes: Sequence[str],
    *,
    colours: Sequence[str] = GENEVAL_COLOURS,
    seed: int = GENEVAL_SEED,
    n_per_task: int = 100,
    max_count: int = 4,
) -> list[dict[str, Any]]:
    """Build a GenEval prompt suite over ``classes`` exactly as GenEval's recipe does.

    Args:
        classes: Object class names (COCO's 80 for the official suite; the
            world's shape names for ShapeWorld).
        colours: Colour names the colour tasks draw from.
        seed: Seed of the single ``np.random.default_rng`` all draws come from.
        n_per_task: Draws per task other than ``single_object`` (before duplicates
            are removed).
        max_count: Largest count of the counting task (the smallest is 2).

    Returns:
        Metadata dicts (``tag``, ``include``, optional ``exclude``, ``prompt``),
        duplicates removed, in draw order.

    Raises:
        ValueError: If the vocabulary is too small for two-object prompts or two colours.
    """
    classes = list(classes)
    colours = list(colours)
    colourable = len(classes) - (UNCOLOURED_CLASS in classes)
    if len(set(classes)) != len(classes) or colourable < 2 or len(colours) < 2:
        raise ValueError("need at least two distinct colourable classes and two colours")
    if not 2 <= max_count < len(NUMBERS) - 1:
        raise ValueError(f"max_count must be in [2, {len(NUMBERS) - 2}], got {max_count}")
    if n_per_task < 0:
        raise ValueError(f"n_per_task must be >= 0, got {n_per_task}")
    rng = np.random.default_rng(seed)
    n = len(classes)
    prompts = [single_object_prompt(classes[i]) for i in rng.choice(n, size=n, replace=False)]
    for _ in range(n_per_task):
        a, b = rng.choice(n, size=2, replace=False)
        prompts.append(two_object_prompt(classes[a], classes[b]))
    for _ in range(n_per_task):
        i = rng.choice(n)
        prompts.append(counting_prompt(classes[i], int(rng.integers(2, max_count, endpoint=True))))
    for _ in range(n_per_task):
        i = _colourable(rng, classes, None)
        prompts.append(colors_prompt(classes[i], colours[rng.choice(len(colours))]))
    for _ in range(n_per_task):
        a, b = rng.choice(n, size=2, replace=False)
        prompts.append(position_prompt(classes[a], POSITIONS[rng.choice(len(POSITIONS))], classes[b]))
    for _ in range(n_per_task):
        a, b = _colourable(rng, classes, 2)
        ca, cb = rng.choice(len(colours), size=2, replace=False)
        prompts.append(color_attr_prompt(classes[a], colours[ca], classes[b], colours[cb]))
    return deduplicate(prompts)


def metadata_key(metadata: Mapping[str, Any]) -> str:
    """Canonical text of a metadata dict: equal prompts have equal keys (GenEval dedupes by YAML dump)."""
    return json.dumps(metadata, sort_keys=True)


def deduplicate(prompts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Drop exact duplicates, keeping the first of each."""
    seen: set[str] = set()
    unique = []
    for prompt in prompts:
        key = metadata_key(prompt)
        if key not in seen:
            seen.add(key)
            unique.append(dict(prompt))
    return unique


def _check_clause(where: str, clause: Any, *, include: bool) -> None:
    if not isinstance(clause, Mapping) or not isinstance(clause.get("class"), str):
        raise ValueError(f"{where}: each clause needs a string 'class'")
    if not isinstance(clause.get("count"), int) or clause["count"] < 0:
        raise ValueError(f"{where}: 'count' must be a non-negative integer")
    if "color" in clause and not include:
        raise ValueError(f"{where}: 'color' is only allowed in include clauses")
    position = clause.get("position")
    if position is not None:
        if not include or not isinstance(position, Sequence) or len(position) != 2:
            raise ValueError(f"{where}: 'position' must be [relation, group index] in an include clause")
        if position[0] not in POSITIONS:
            raise ValueError(f"{where}: unknown relation {position[0]!r}; GenEval's are {list(POSITIONS)}")


def validate_metadata(metadata: Any, where: str = "metadata") -> dict[str, Any]:
    """Check one GenEval metadata object; return it as a dict.

    Raises:
        ValueError: Naming ``where`` and the bad field.
    """
    if not isinstance(metadata, Mapping):
        raise ValueError(f"{where}: expected a JSON object")
    if not isinstance(metadata.get("prompt"), str) or not isinstance(metadata.get("tag"), str):
        raise ValueError(f"{where}: needs string fields 'tag' and 'prompt'")
    include = metadata.get("include", [])
    for i, clause in enumerate(include):
        _check_clause(f"{where}: include[{i}]", clause, include=True)
        position = clause.get("position")
        if position is not None and not 0 <= int(position[1]) < i:
            raise ValueError(f"{where}: include[{i}] position refers to group {position[1]}, not an earlier one")
    for i, clause in enumerate(metadata.get("exclude", [])):
        _check_clause(f"{where}: exclude[{i}]", clause, include=False)
    return dict(metadata)


def load_metadata(path: str | Path) -> list[dict[str, Any]]:
    """Read a GenEval ``evaluation_metadata.jsonl`` (one JSON object per line), e.g. the official 553 prompts.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: Naming the file and line of the first malformed prompt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GenEval metadata file not found")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not JSON: {err}") from None
        prompts.append(validate_metadata(data, f"{path}:{number}"))
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def write_metadata(path: str | Path, prompts: Sequence[Mapping[str, Any]]) -> Path:
    """Write prompts as a GenEval ``evaluation_metadata.jsonl`` (atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for prompt in prompts:
            fh.write(json.dumps(prompt) + "\n")
    return Path(path)


def usual_colour_split(prompts: Sequence[Mapping[str, Any]], usual: Mapping[str, str]) -> dict[str, bool]:
    """For prompts that name colours: whether every named colour is its class's usual one.

    Returns:
        ``metadata_key -> True`` (all usual) or ``False`` (some unusual), for
        prompts with at least one ``color`` clause.
    """
    out = {}
    for prompt in prompts:
        coloured = [c for c in prompt.get("include", []) if "color" in c]
        if coloured:
            out[metadata_key(prompt)] = all(usual.get(c["class"]) == c["color"] for c in coloured)
    return out
