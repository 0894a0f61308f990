"""The RecA objective, written once against the adapter protocol.

    L = λ_reca · L_reca + λ_i2t · L_i2t + λ_t2i · L_t2i

* ``L_reca``: the generation branch's own loss for reproducing an unlabeled
  image, conditioned on ``concat(template, h_v)`` where ``h_v`` are the
  model's own understanding embeddings of a degraded copy of that image and
  the template is drawn at random per sample. The condition is dropped with a
  small probability so classifier-free guidance keeps working.
* ``L_i2t``: captioning loss on captioned images (keeps understanding intact
  in models whose branches share parameters).
* ``L_t2i``: ordinary text-to-image loss on captioned images.

All random choices (templates, dropout masks, instructions) arrive in the
batch, drawn by :mod:`reca.training.batches` from (seed, step), so a resumed
run sees exactly what an uninterrupted one would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reca.models.base import Condition, UMMAdapter


@dataclass
class ReconstructionBatch:
    """Unlabeled images for ``L_reca``."""

    targets: torch.Tensor  # generation-resolution target, [-1, 1]
    templates: list[str]
    drop: torch.Tensor  # bool (B,)
    pixels: torch.Tensor | None = None  # degraded understanding copy, when h_v is computed live
    features: torch.Tensor | None = None  # cached encoder features, when the encoder is frozen


@dataclass
class CaptionedBatch:
    """Captioned images for ``L_i2t`` and ``L_t2i``."""

    pixels: torch.Tensor  # clean image, [-1, 1]
    captions: list[str]
    instructions: list[str]
    drop: torch.Tensor  # bool (B,), CFG dropout for the t2i term


@dataclass
class TrainBatch:
    reconstruction: ReconstructionBatch | None = None
    captioned: CaptionedBatch | None = None


class RecAObjective(nn.Module):
    """Weighted sum of the three terms; the module DeepSpeed wraps (adapter inside)."""

    def __init__(
        self,
        adapter: UMMAdapter,
        *,
        lambda_reca: float = 1.0,
        lambda_i2t: float = 1.0,
        lambda_t2i: float = 0.0,
        use_understanding: bool = True,
    ) -> None:
        super().__init__()
        self.adapter = adapter
        self.lambda_reca = lambda_reca
        self.lambda_i2t = lambda_i2t
        self.lambda_t2i = lambda_t2i
        # False is the control arm: the template alone, with h_v removed from the condition.
        self.use_understanding = use_understanding

    def reconstruction_loss(self, batch: ReconstructionBatch) -> torch.Tensor:
        h_v = None
        if self.use_understanding:
            features = batch.features
            if features is None:
                if batch.pixels is None:
                    raise ValueError("reconstruction batch needs cached features or understanding pixels")
                features = self.adapter.understanding_features(batch.pixels)
            h_v = self.adapter.understanding_embeddings(features)
        condition = Condition(texts=batch.templates, image_embeddings=h_v, drop=batch.drop)
        return self.adapter.generation_loss(condition, batch.targets)

    def forward(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the total loss and each weighted term's unweighted value (for logging)."""
        total = torch.zeros((), device=next(self.parameters()).device)
        terms: dict[str, float] = {}
        images = 0
        if self.lambda_reca > 0:
            if batch.reconstruction is None:
                raise ValueError("lambda_reca > 0 but the batch has no reconstruction part")
            loss = self.reconstruction_loss(batch.reconstruction)
            total = total + self.lambda_reca * loss
            terms["loss_reca"] = loss.item()
            images += len(batch.reconstruction.templates)
        if self.lambda_i2t > 0 or self.lambda_t2i > 0:
            cap = batch.captioned
            if cap is None:
                raise ValueError("lambda_i2t or lambda_t2i > 0 but the batch has no captioned part")
            if self.lambda_i2t > 0:
                loss = self.adapter.i2t_loss(cap.pixels, cap.instructions, cap.captions)
                total = total + self.lambda_i2t * loss
                terms["loss_i2t"] = loss.item()
            if self.lambda_t2i > 0:
                loss = self.adapter.generation_loss(Condition(texts=cap.captions, drop=cap.drop), cap.pixels)
                total = total + self.lambda_t2i * loss
                terms["loss_t2i"] = loss.item()
                images += len(cap.captions)
        terms["loss"] = total.item()
        if self.adapter.tokens_per_image:
            # Generated-image tokens supervised this micro-batch: the throughput unit.
            terms["tokens"] = float(images * self.adapter.tokens_per_image)
        return total, terms
