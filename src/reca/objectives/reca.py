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
run sees exactly what an uninterrupted one would have seen. The SFT stage's
extra alignment term lives with SFT (:mod:`reca.objectives.sft`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from reca.models.base import Condition, LatentConditioned, UMMAdapter

#: where the reconstruction condition's image embeddings come from (``train.condition``)
CONDITIONS = ("understanding", "template_only", "generation_latents")


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
    templates: list[str] = field(default_factory=list)  # reconstruction templates, for SFT's condition_states


@dataclass
class TrainBatch:
    reconstruction: ReconstructionBatch | None = None
    captioned: CaptionedBatch | None = None

    def to(self, device: torch.device | str) -> TrainBatch:
        """This batch with every tensor, however deep, on ``device`` (the engine's, before its forward)."""
        return _to_device(self, torch.device(device))


def _to_device(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value, **{f.name: _to_device(getattr(value, f.name), device)
                                             for f in dataclasses.fields(value)})
    return value


class RecAObjective(nn.Module):
    """Weighted sum of the three terms; the module DeepSpeed wraps (adapter inside).

    ``forward`` returns the total and the unweighted terms as detached tensors:
    nothing is read back to the host inside it (a device sync per term on a
    GPU); the trainer reads the values when it logs them.
    """

    def __init__(
        self,
        adapter: UMMAdapter,
        *,
        lambda_reca: float = 1.0,
        lambda_i2t: float = 1.0,
        lambda_t2i: float = 0.0,
        condition: str = "understanding",
    ) -> None:
        """
        Args:
            condition: ``understanding`` (RecA: template + ``h_v``), ``template_only``
                (the control: ``h_v`` removed) or ``generation_latents`` (the paper's
                ablation: the generation encoder's latents of the same degraded image
                in ``h_v``'s place; adapters implementing
                :class:`~reca.models.base.LatentConditioned`).

        Raises:
            ValueError: For an unknown condition, or ``generation_latents`` on an adapter without it.
        """
        super().__init__()
        if condition not in CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; expected one of {', '.join(CONDITIONS)}")
        if condition == "generation_latents" and not isinstance(adapter, LatentConditioned):
            raise ValueError(f"adapter {adapter.name!r} cannot condition on its generation latents "
                             "(its language model never reads them); use condition: understanding")
        self.adapter = adapter
        self.lambda_reca = lambda_reca
        self.lambda_i2t = lambda_i2t
        self.lambda_t2i = lambda_t2i
        self.condition = condition

    # ------------------------------------------------------------------ terms
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
        """``L_reca``: reproduce the target from [template + h_v], condition dropped per ``batch.drop``."""
        condition = Condition(texts=batch.templates, image_embeddings=self._condition_embeddings(batch),
                              drop=batch.drop)
        return self.adapter.generation_loss(condition, batch.targets)

    def i2t_loss(self, batch: CaptionedBatch) -> torch.Tensor:
        """``L_i2t``: caption the image."""
        return self.adapter.i2t_loss(batch.pixels, batch.instructions, batch.captions)

    def t2i_loss(self, batch: CaptionedBatch) -> torch.Tensor:
        """``L_t2i``: draw the image from its caption."""
        return self.adapter.generation_loss(Condition(texts=batch.captions, drop=batch.drop), batch.pixels)

    def terms(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """Each term whose weight is positive, unweighted; a term with weight 0 is not computed."""
        terms: dict[str, torch.Tensor] = {}
        if self.lambda_reca > 0:
            terms["reca"] = self.reconstruction_loss(require_part(batch.reconstruction, "reconstruction", "lambda_reca"))
        return {**terms, **self.captioned_terms(batch)}

    def captioned_terms(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """The terms computed on the captioned part of the batch."""
        terms: dict[str, torch.Tensor] = {}
        if self.lambda_i2t > 0:
            terms["i2t"] = self.i2t_loss(require_part(batch.captioned, "captioned", "lambda_i2t"))
        if self.lambda_t2i > 0:
            terms["t2i"] = self.t2i_loss(require_part(batch.captioned, "captioned", "lambda_t2i"))
        return terms

    def weighted_sum(self, L: dict[str, torch.Tensor]) -> torch.Tensor:
        """The objective from its terms (absent terms count 0)."""
        zero = torch.zeros((), device=next(self.parameters()).device)
        return (self.lambda_reca * L.get("reca", zero)
                + self.lambda_i2t * L.get("i2t", zero)
                + self.lambda_t2i * L.get("t2i", zero))

    def forward(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss, and ``loss`` plus each computed term as ``loss_<term>`` (detached, for logging)."""
        L = self.terms(batch)
        total = self.weighted_sum(L)
        return total, {"loss": total.detach(), **{f"loss_{name}": value.detach() for name, value in L.items()}}

    def supervised_tokens(self, batch: TrainBatch) -> int:
        """Generated-image tokens a micro-batch supervises: the throughput unit (0 when not meaningful)."""
        per_image = self.adapter.tokens_per_image or 0
        images = 0
        if self.lambda_reca > 0 and batch.reconstruction is not None:
            images += len(batch.reconstruction.templates)
        if self.lambda_t2i > 0 and batch.captioned is not None:
            images += len(batch.captioned.captions)
        return images * per_image


def require_part(part, name: str, weight: str):
    """``part`` of a batch, or a clear error naming the weight that needs it."""
    if part is None:
        raise ValueError(f"{weight} > 0 but the batch has no {name} part")
    return part
