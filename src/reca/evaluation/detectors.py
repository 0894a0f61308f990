"""A learned detector for the GenEval scorer on real images: Mask2Former.

:class:`Mask2FormerDetector` runs a transformers
``Mask2FormerForUniversalSegmentation`` instance-segmentation checkpoint
(GenEval uses Mask2Former Swin-S on COCO) from a local directory or hub id.
Labels come from the checkpoint's ``id2label``, so prompt classes must use the
same names. It pairs with the ``clip`` colour classifier
(:mod:`reca.evaluation.colour_classifier`). The default world's exact detector
lives with the world (:mod:`reca.shapeworld.detector`); the ``evaluate`` stage
picks one of the two by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from reca.evaluation.geneval import Detection

if TYPE_CHECKING:  # torch is imported where a model runs, not at import
    import torch


class Mask2FormerDetector:
    """Instance segmentation with a transformers Mask2Former checkpoint."""

    def __init__(self, model, processor, *, batch_size: int = 8, device: torch.device | str = "cpu") -> None:  # noqa: ANN001
        self.model = model.eval().to(device)
        self.device = device
        self.processor = processor
        self.batch_size = batch_size
        self.id2label = {int(k): v for k, v in model.config.id2label.items()}

    @classmethod
    def from_pretrained(cls, path: str | Path, *, revision: str | None = None, trust_remote_code: bool = False,
                        batch_size: int = 8, device: torch.device | str = "cpu") -> Mask2FormerDetector:
        """Load the model and its image processor from a local directory or hub id, the model on ``device``."""
        from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation

        model = Mask2FormerForUniversalSegmentation.from_pretrained(str(path), revision=revision,
                                                                    trust_remote_code=trust_remote_code)
        processor = AutoImageProcessor.from_pretrained(str(path), revision=revision,
                                                       trust_remote_code=trust_remote_code)
        return cls(model, processor, batch_size=batch_size, device=device)

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Every predicted instance (no threshold: the scorer applies GenEval's)."""
        import torch

        out: list[list[Detection]] = []
        for start in range(0, len(images), self.batch_size):
            batch = [img.convert("RGB") for img in images[start : start + self.batch_size]]
            inputs = self.processor(images=batch, return_tensors="pt").to(self.device)
            with torch.no_grad():
                outputs = self.model(**inputs)
            results = self.processor.post_process_instance_segmentation(
                outputs, threshold=0.0, target_sizes=[(img.height, img.width) for img in batch],
                return_binary_maps=True)
            for result in results:
                masks = result["segmentation"]
                found = []
                for k, info in enumerate(result["segments_info"]):
                    mask = masks[k].bool().cpu().numpy() if masks is not None and masks.dim() == 3 else None
                    if mask is None or not mask.any():
                        continue
                    ys, xs = np.nonzero(mask)
                    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
                    label = self.id2label.get(int(info["label_id"]), str(info["label_id"]))
                    found.append(Detection(label=label, score=float(info["score"]), box=box, mask=mask))
                out.append(found)
        return out
