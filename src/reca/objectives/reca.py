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

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from reca.models.base import Condition, LatentConditioned, TextAligned, UMMAdapter

#: where the reconstruction condition's image embeddings come from (``train.condition``)
CONDITIONS = ("understanding", "template_only", "generation_latents")
#: where ``lambda_align`` compares an image with its caption (``sft.align_at``)
ALIGN_SPACES = ("word_embeddings", "condition_states")


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
    templates: list[str] = field(default_factory=list)  # reconstruction templates, for align_at condition_states


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
        condition: str = "understanding",
        lambda_align: float = 0.0,
        align_temperature: float = 0.07,
        align_at: str = "word_embeddings",
    ) -> None:
        """
        Args:
            condition: ``understanding`` (RecA: template + ``h_v``), ``template_only``
                (the control: ``h_v`` removed) or ``generation_latents`` (the paper's
                ablation: the generation encoder's latents of the same degraded image
                in ``h_v``'s place; adapters implementing
                :class:`~reca.models.base.LatentConditioned`).

            lambda_align: Weight of a contrastive term on the captioned batch that pulls
                each image's mean ``h_v`` towards the mean input embedding of its caption
                (adapters implementing :class:`~reca.models.base.TextAligned`): the
                text-aligned encoder a pretrained UMM starts from, for a model trained
                from scratch.
            align_temperature: Softmax temperature of that term.
            align_at: ``word_embeddings`` (mean ``h_v`` against the caption's mean input
                embedding) or ``condition_states`` (the language model's state at
                ``<begin_of_image>``, every layer, after the reconstruction condition
                template + ``h_v`` against after the caption: where generation reads them).

        Raises:
            ValueError: For an unknown condition, ``generation_latents`` on an adapter
                without it, or ``lambda_align`` on an adapter that is not TextAligned.
        """
        super().__init__()
        if condition not in CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; expected one of {', '.join(CONDITIONS)}")
        if align_at not in ALIGN_SPACES:
            raise ValueError(f"unknown align_at {align_at!r}; expected one of {', '.join(ALIGN_SPACES)}")
        if condition == "generation_latents" and not isinstance(adapter, LatentConditioned):
            raise ValueError(f"adapter {adapter.name!r} cannot condition on its generation latents "
                             "(its language model never reads them); use condition: understanding")
        if lambda_align > 0 and not isinstance(adapter, TextAligned):
            raise ValueError(f"adapter {adapter.name!r} cannot align h_v with text embeddings; set lambda_align: 0")
        self.adapter = adapter
        self.lambda_align = lambda_align
        self.align_temperature = align_temperature
        self.align_at = align_at
        self.lambda_reca = lambda_reca
        self.lambda_i2t = lambda_i2t
        self.lambda_t2i = lambda_t2i
        self.condition = condition

    def _condition_embeddings(self, batch: ReconstructionBatch) -> torch.Tensor | None:
        if self.condition == "template_only":
            return None
        if self.condition == "understanding" and batch.features is not None:
            return self.adapter.understanding_embeddings(batch.features)
        if batch.pixels is None:
            raise ValueError(f"a {self.condition} condition needs cached features or the degraded understanding "
                             "pixels in the reconstruction batch")
        if self.condition == "understanding":
            return self.adapter.embed_images(batch.pixels)
        return self.adapter.latent_condition(batch.pixels)

    def reconstruction_loss(self, batch: ReconstructionBatch) -> torch.Tensor:
        condition = Condition(texts=batch.templates, image_embeddings=self._condition_embeddings(batch),
                              drop=batch.drop)
        return self.adapter.generation_loss(condition, batch.targets)

    def alignment_loss(self, batch: CaptionedBatch) -> torch.Tensor:
        """Contrastive loss between each image and its caption, in the ``align_at`` space."""
        h_v = self.adapter.embed_images(batch.pixels)
        if self.align_at == "word_embeddings":
            images, texts = h_v.mean(dim=1), self.adapter.pooled_text_embeddings(batch.captions)
        else:
            if len(batch.templates) != len(batch.captions):
                raise ValueError("align_at condition_states needs a reconstruction template per captioned image")
            images = _layerwise(self.adapter.condition_states(Condition(texts=batch.templates, image_embeddings=h_v)))
            texts = _layerwise(self.adapter.condition_states(Condition(texts=batch.captions)))
        return contrastive_alignment_loss(images, texts, batch.captions, self.align_temperature)

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
        if self.lambda_i2t > 0 or self.lambda_t2i > 0 or self.lambda_align > 0:
            cap = batch.captioned
            if cap is None:
                raise ValueError("lambda_i2t, lambda_t2i or lambda_align > 0 but the batch has no captioned part")
            if self.lambda_align > 0:
                loss = self.alignment_loss(cap)
                total = total + self.lambda_align * loss
                terms["loss_align"] = loss.item()
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


def _layerwise(states: torch.Tensor) -> torch.Tensor:
    """(B, layers, D) -> (B, layers * D) whose cosine similarity is the mean of the per-layer ones."""
    return F.normalize(states.float(), dim=-1).flatten(1)


def contrastive_alignment_loss(images: torch.Tensor, texts: torch.Tensor, captions: Sequence[str],
                               temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between paired (B, D) image and text vectors (cosine similarity / temperature).

    Samples with the same caption are positives of one another, not negatives:
    the captioned split repeats short captions ("a photo of a circle") within a batch.
    """
    logits = F.normalize(images.float(), dim=-1) @ F.normalize(texts.float(), dim=-1).T / temperature
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=logits.dtype, device=logits.device)
    targets = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
