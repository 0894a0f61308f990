"""Colour of a detected object, from its masked crop (GenEval's colour rule).

GenEval pastes the object's instance mask onto a plain #999 grey canvas, crops
the box, and classifies the crop zero-shot with CLIP (ViT-L-14) among its ten
colours, using three prompts per colour averaged into one text embedding:
"a photo of a {c} {class}", "a photo of a {c}-colored {class}", "a photo of a
{c} object". :class:`ClipColourClassifier` does that with a transformers CLIP
checkpoint from a local directory (or hub id). The exact counterpart for the
default world, where each masked pixel votes for its nearest palette colour, is
:class:`reca.shapeworld.detector.PaletteColourClassifier`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from reca.evaluation.geneval import Detection
from reca.evaluation.geneval_prompts import GENEVAL_COLOURS

if TYPE_CHECKING:  # torch is imported where a model runs, not at import
    import torch

#: GenEval's canvas colour behind a masked object
CROP_BACKGROUND = "#999"
#: GenEval's three prompt templates per colour
COLOUR_TEMPLATES: tuple[str, ...] = ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}",
                                     "a photo of a {c} object")


def masked_crop(image: Image.Image, detection: Detection, background: str = CROP_BACKGROUND) -> Image.Image:
    """The object on a plain canvas (when it has a mask), cropped to its box."""
    image = image.convert("RGB")
    if detection.mask is not None:
        if tuple(detection.mask.shape) != (image.height, image.width):
            raise ValueError(f"mask shape {detection.mask.shape} does not match image size {image.size}")
        canvas = Image.new("RGB", image.size, background)
        image = Image.composite(image, canvas, Image.fromarray(detection.mask.astype(np.uint8) * 255))
    x0, y0, x1, y1 = (round(v) for v in detection.box)
    return image.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))


class ClipColourClassifier:
    """GenEval's CLIP zero-shot colour classifier on a transformers CLIP checkpoint."""

    def __init__(self, model, processor, *, colours: Sequence[str] = GENEVAL_COLOURS, batch_size: int = 16,  # noqa: ANN001
                 device: torch.device | str = "cpu") -> None:
        self.model = model.eval().to(device)
        self.device = device
        self.processor = processor
        self.colours = list(colours)
        self.batch_size = batch_size
        self._text_weights: dict[str, object] = {}

    @classmethod
    def from_pretrained(cls, path: str | Path, *, revision: str | None = None, trust_remote_code: bool = False,
                        **kwargs: object) -> ClipColourClassifier:
        """Load a CLIP model and its processor (tokenizer + image processor) from a local dir or hub id.

        ``kwargs`` go to the constructor (``colours``, ``batch_size``, ``device``).
        """
        from transformers import AutoProcessor, CLIPModel

        model = CLIPModel.from_pretrained(str(path), revision=revision, trust_remote_code=trust_remote_code)
        processor = AutoProcessor.from_pretrained(str(path), revision=revision, trust_remote_code=trust_remote_code)
        return cls(model, processor, **kwargs)  # type: ignore[arg-type]

    def _weights(self, classname: str):  # noqa: ANN202 - a (D, colours) tensor
        import torch

        if classname not in self._text_weights:
            columns = []
            with torch.no_grad():
                for colour in self.colours:
                    texts = [t.format(c=colour, cls=classname) for t in COLOUR_TEMPLATES]
                    tokens = self.processor.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
                    emb = _features(self.model.get_text_features(**tokens))
                    emb = torch.nn.functional.normalize(emb, dim=-1).mean(0)
                    columns.append(torch.nn.functional.normalize(emb, dim=-1))
            self._text_weights[classname] = torch.stack(columns, dim=1)
        return self._text_weights[classname]

    def classify(self, image: Image.Image, detections: Sequence[Detection], classname: str) -> list[str]:
        """One of the colours per detection: argmax of crop-text cosine similarity."""
        import torch

        if not detections:
            return []
        weights = self._weights(classname)
        crops = [masked_crop(image, det) for det in detections]
        out = []
        with torch.no_grad():
            for start in range(0, len(crops), self.batch_size):
                pixels = self.processor.image_processor(images=crops[start : start + self.batch_size],
                                                        return_tensors="pt")["pixel_values"].to(self.device)
                feats = torch.nn.functional.normalize(_features(self.model.get_image_features(pixel_values=pixels)),
                                                      dim=-1)
                out += [self.colours[i] for i in (feats @ weights).argmax(-1).tolist()]
        return out


def _features(output):  # noqa: ANN001, ANN202
    # transformers 5 returns a model output from get_*_features; older versions a tensor.
    return getattr(output, "pooler_output", output)
