"""GenEval-format image folders: write them, read them, score them.

GenEval's layout (what its ``generation/diffusers_generate.py`` writes and
``evaluation/evaluate_images.py`` reads)::

    <dir>/00000/metadata.jsonl      the prompt's metadata, one JSON object
    <dir>/00000/samples/00000.png   its images (any name matching ``\\d+\\.png``)
    <dir>/00001/...

``evaluate`` writes each model's generations this way, so the official GenEval
scripts can re-score them, and :func:`score_folder` scores folders made
elsewhere (``reca geneval-score``). Folders or images that cannot be read are
reported in ``problems`` with the reason, never silently skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps
from tqdm import tqdm

from reca.evaluation.geneval import DEFAULT_RULES, ColourClassifier, Detector, GenEvalRules, score_image
from reca.evaluation.geneval_prompts import validate_metadata
from reca.fileio import atomic_path

_SAMPLE = re.compile(r"^\d+\.png$")


def sample_path(root: str | Path, prompt: int, sample: int) -> Path:
    """Where image ``sample`` of prompt ``prompt`` goes in a GenEval folder (its name in result rows)."""
    return Path(root) / f"{prompt:05d}" / "samples" / f"{sample:05d}.png"


def write_folder(root: str | Path, prompts: Sequence[Mapping[str, Any]],
                 images: Sequence[Sequence[Image.Image]]) -> Path:
    """Write prompts and their images (``images[i]`` belongs to ``prompts[i]``) in GenEval's layout."""
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} image lists")
    root = Path(root)
    for index, (prompt, samples) in enumerate(zip(prompts, images, strict=True)):
        folder = root / f"{index:05d}"
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "metadata.jsonl") as tmp:
            tmp.write_text(json.dumps(dict(prompt)) + "\n", encoding="utf-8")
        for k, image in enumerate(samples):
            with atomic_path(sample_path(root, index, k)) as tmp:
                image.save(tmp, format="PNG")
    return root


def read_folder(root: str | Path) -> tuple[list[tuple[Path, dict[str, Any]]], list[dict[str, str]]]:
    """List ``(image path, metadata)`` pairs of a GenEval folder, in prompt then sample order.

    Returns:
        The pairs, and problems (``{"path", "reason"}``) for prompt folders
        whose metadata is missing or malformed, or that hold no samples.

    Raises:
        FileNotFoundError: If ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: GenEval image folder not found")
    pairs, problems = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        meta_path = folder / "metadata.jsonl"
        try:
            metadata = validate_metadata(json.loads(meta_path.read_text(encoding="utf-8")), str(meta_path))
        except FileNotFoundError:
            problems.append({"path": str(folder), "reason": "no metadata.jsonl"})
            continue
        except (json.JSONDecodeError, ValueError) as err:
            problems.append({"path": str(meta_path), "reason": f"bad metadata: {err}"})
            continue
        samples = sorted(p for p in (folder / "samples").glob("*.png") if _SAMPLE.match(p.name) and p.is_file())
        if not samples:
            problems.append({"path": str(folder), "reason": "no samples/<N>.png images"})
        pairs += [(sample, metadata) for sample in samples]
    if not pairs and not problems:
        problems.append({"path": str(root), "reason": "no <NNNNN>/ prompt folders"})
    return pairs, problems


def score_images(images: Sequence[Image.Image], metadata: Sequence[Mapping[str, Any]], filenames: Sequence[str],
                 detector: Detector, colour_classifier: ColourClassifier, rules: GenEvalRules = DEFAULT_RULES
                 ) -> list[dict[str, Any]]:
    """GenEval result rows of a batch of images (``images[k]`` made for ``metadata[k]``), detected together."""
    detections = detector.detect(list(images))
    return [score_image(image, found, meta, colour_classifier, rules, filename=name)
            for image, found, meta, name in zip(images, detections, metadata, filenames, strict=True)]


def score_folder(root: str | Path, detector: Detector, colour_classifier: ColourClassifier,
                 rules: GenEvalRules = DEFAULT_RULES, *, batch_size: int = 32
                 ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Score every image of a GenEval folder; return (GenEval result rows, problems).

    Images that cannot be decoded join ``problems`` with the decoder's message.
    """
    pairs, problems = read_folder(root)
    rows: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(pairs), batch_size), desc=f"geneval {Path(root).name}", unit="batch",
                      disable=len(pairs) <= batch_size):
        loaded = []
        for path, metadata in pairs[start : start + batch_size]:
            try:
                with Image.open(path) as raw:
                    loaded.append((path, metadata, ImageOps.exif_transpose(raw).convert("RGB")))
            except OSError as err:
                problems.append({"path": str(path), "reason": f"unreadable image: {err}"})
        rows += score_images([image for _, _, image in loaded], [metadata for _, metadata, _ in loaded],
                             [str(path) for path, _, _ in loaded], detector, colour_classifier, rules)
    return rows, problems
