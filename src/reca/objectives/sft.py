"""The SFT objective: RecA's terms plus the alignment term a model trained from scratch needs.

    L_sft = λ_reca · L_reca + λ_i2t · L_i2t + λ_t2i · L_t2i + λ_align · L_align

Pretrained UMMs start with ``h_v`` aligned to text (a SigLIP encoder, an
aligner trained on captions); a model built from scratch for the embedded
default does not. ``sft.lambda_align`` pulls each captioned image towards its
caption (symmetric InfoNCE), in one of two spaces (``sft.align_at``): the
language model's input embeddings, or its state where generation reads a
condition. RecA itself never uses this term.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from reca.models.base import Condition, TextAligned, UMMAdapter
from reca.objectives.reca import CaptionedBatch, RecAObjective, TrainBatch, require_part

#: where ``lambda_align`` compares an image with its caption (``sft.align_at``)
ALIGN_SPACES = ("word_embeddings", "condition_states")


class SFTObjective(RecAObjective):
    """RecA's weighted terms plus ``λ_align · L_align`` on the captioned batch."""

    def __init__(
        self,
        adapter: UMMAdapter,
        *,
        lambda_reca: float = 0.0,
        lambda_i2t: float = 1.0,
        lambda_t2i: float = 1.0,
        lambda_align: float = 0.0,
        align_temperature: float = 0.07,
        align_at: str = "word_embeddings",
    ) -> None:
        """
        Args:
            lambda_align: Weight of a contrastive term on the captioned batch that pulls
                each image towards its caption (adapters implementing
                :class:`~reca.models.base.TextAligned`).
            align_temperature: Softmax temperature of that term.
            align_at: ``word_embeddings`` (mean ``h_v`` against the caption's mean input
                embedding) or ``condition_states`` (the language model's state at
                ``<begin_of_image>``, every layer, after the reconstruction condition
                template + ``h_v`` against after the caption: where generation reads them).

        Raises:
            ValueError: For an unknown ``align_at``, or ``lambda_align`` on an adapter that is not TextAligned.
        """
        if align_at not in ALIGN_SPACES:
            raise ValueError(f"unknown align_at {align_at!r}; expected one of {', '.join(ALIGN_SPACES)}")
        if lambda_align > 0 and not isinstance(adapter, TextAligned):
            raise ValueError(f"adapter {adapter.name!r} cannot align h_v with text embeddings; set lambda_align: 0")
        super().__init__(adapter, lambda_reca=lambda_reca, lambda_i2t=lambda_i2t, lambda_t2i=lambda_t2i)
        self.lambda_align = lambda_align
        self.align_temperature = align_temperature
        self.align_at = align_at

    def alignment_loss(self, batch: CaptionedBatch) -> torch.Tensor:
        """``L_align``: contrastive loss between each image and its caption, in the ``align_at`` space."""
        h_v = self.adapter.embed_images(batch.pixels)
        if self.align_at == "word_embeddings":
            images, texts = h_v.mean(dim=1), self.adapter.pooled_text_embeddings(batch.captions)
        else:
            if len(batch.templates) != len(batch.captions):
                raise ValueError("align_at condition_states needs a reconstruction template per captioned image")
            images = _layerwise(self.adapter.condition_states(Condition(texts=batch.templates, image_embeddings=h_v)))
            texts = _layerwise(self.adapter.condition_states(Condition(texts=batch.captions)))
        return contrastive_alignment_loss(images, texts, batch.captions, self.align_temperature)

    def captioned_terms(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if self.lambda_align > 0:
            terms["align"] = self.alignment_loss(require_part(batch.captioned, "captioned", "lambda_align"))
        return {**terms, **super().captioned_terms(batch)}

    def weighted_sum(self, L: dict[str, torch.Tensor]) -> torch.Tensor:
        zero = torch.zeros((), device=next(self.parameters()).device)
        return (self.lambda_reca * L.get("reca", zero)
                + self.lambda_align * L.get("align", zero)
                + self.lambda_i2t * L.get("i2t", zero)
                + self.lambda_t2i * L.get("t2i", zero))


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
