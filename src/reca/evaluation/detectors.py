"""Detectors and colour classifiers the GenEval scorer plugs in, chosen by name.

* ``shapeworld``: the exact detector of the default world
  (:mod:`reca.evaluation.shapeworld_detector`): labels are shape names, the
  confidence is the IoU with the best shape template, masks are the
  colour-segmented components. Pairs with the ``palette`` colour classifier.
* ``mask2former``: a transformers ``Mask2FormerForUniversalSegmentation``
  instance-segmentation checkpoint (GenEval uses Mask2Former Swin-S on COCO),
  from a local directory or hub id. Labels come from the checkpoint's
  ``id2label``, so prompt classes must use the same names. Pairs with the
  ``clip`` colour classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from reca.data.shapeworld import PALETTE, SHAPES
from reca.evaluation.colour_classifier import ClipColourClassifier, PaletteColourClassifier
from reca.evaluation.geneval import ColourClassifier, Detection, Detector
from reca.evaluation.shapeworld_detector import detect

DETECTORS = ("shapeworld", "mask2former")
COLOUR_CLASSIFIERS = ("palette", "clip")


class ShapeWorldDetector:
    """The exact ShapeWorld detector behind the :class:`~reca.evaluation.geneval.Detector` protocol."""

    def __init__(self, colours: Sequence[str], shapes: Sequence[str] = SHAPES) -> None:
        """Args: colours: the world's colour names; shapes: its shape names."""
        unknown = sorted(set(colours) - set(PALETTE)) + sorted(set(shapes) - set(SHAPES))
        if unknown:
            raise ValueError(f"the shapeworld detector does not know {unknown}; colours: {list(PALETTE)}, "
                             f"shapes: {list(SHAPES)}")
        self.palette = {c: PALETTE[c] for c in colours}
        self.shapes = tuple(shapes)

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Every object in each image; the box is the component's, end-exclusive."""
        return [
            [Detection(label=d.shape, score=d.score, box=tuple(float(v) for v in d.bbox), mask=d.mask)
             for d in detect(image, colours=self.palette, shapes=self.shapes)]
            for image in images
        ]


class Mask2FormerDetector:
    """Instance segmentation with a transformers Mask2Former checkpoint."""

    def __init__(self, model, processor, *, batch_size: int = 8) -> None:  # noqa: ANN001
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.id2label = {int(k): v for k, v in model.config.id2label.items()}

    @classmethod
    def from_pretrained(cls, path: str | Path, *, revision: str | None = None, trust_remote_code: bool = False,
                        batch_size: int = 8) -> Mask2FormerDetector:
        """Load the model and its image processor from a local directory or hub id."""
        from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation

        model = Mask2FormerForUniversalSegmentation.from_pretrained(str(path), revision=revision,
                                                                    trust_remote_code=trust_remote_code)
        processor = AutoImageProcessor.from_pretrained(str(path), revision=revision,
                                                       trust_remote_code=trust_remote_code)
        return cls(model, processor, batch_size=batch_size)

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Every predicted instance (no threshold: the scorer applies GenEval's)."""
        import torch

        out: list[list[Detection]] = []
        for start in range(0, len(images), self.batch_size):
            batch = [img.convert("RGB") for img in images[start : start + self.batch_size]]
            inputs = self.processor(images=batch, return_tensors="pt")
            with torch.no_grad():
                outputs = self.model(**inputs)
            results = self.processor.post_process_instance_segmentation(
                outputs, threshold=0.0, target_sizes=[(img.height, img.width) for img in batch],
                return_binary_maps=True)
            for result in results:
                masks = result["segmentation"]
                found = []
                for k, info in enumerate(result["segments_info"]):
                    mask = masks[k].bool().numpy() if masks is not None and masks.dim() == 3 else None
                    if mask is None or not mask.any():
                        continue
                    ys, xs = np.nonzero(mask)
                    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
                    label = self.id2label.get(int(info["label_id"]), str(info["label_id"]))
                    found.append(Detection(label=label, score=float(info["score"]), box=box, mask=mask))
                out.append(found)
        return out


def build_detector(name: str, *, colours: Sequence[str], classes: Sequence[str], path: str | None = None,
                   revision: str | None = None, trust_remote_code: bool = False) -> Detector:
    """The detector called ``name`` (one of :data:`DETECTORS`)."""
    if name == "shapeworld":
        return ShapeWorldDetector(colours, classes)
    if name == "mask2former":
        if not path:
            raise ValueError("the mask2former detector needs evaluate.detector_path (a local dir or hub id)")
        return Mask2FormerDetector.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")


def build_colour_classifier(name: str, *, colours: Sequence[str], path: str | None = None,
                            revision: str | None = None, trust_remote_code: bool = False) -> ColourClassifier:
    """The colour classifier called ``name`` (one of :data:`COLOUR_CLASSIFIERS`)."""
    if name == "palette":
        return PaletteColourClassifier(colours)
    if name == "clip":
        if not path:
            raise ValueError("the clip colour classifier needs evaluate.clip_path (a local dir or hub id)")
        return ClipColourClassifier.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    raise ValueError(f"unknown colour classifier {name!r}; known: {', '.join(COLOUR_CLASSIFIERS)}")
