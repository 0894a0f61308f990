"""The UMM adapter protocol: the one interface the RecA objective is written against.

A unified multimodal model has an understanding branch (vision encoder plus
projector into the language model) and a generation branch (its own image
representation and loss). An adapter exposes exactly what RecA needs from
both, whatever the paradigm (discrete autoregressive, masked tokens, MAR,
flow matching), so that :mod:`reca.objectives.reca` never branches on the
model type.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from torch import nn

#: seed of the fixed masks and noise drawn when an adapter is in eval mode (comparable validation losses)
EVAL_LOSS_SEED = 0


@dataclass
class Condition:
    """What the generation branch is conditioned on, for a batch.

    Attributes:
        texts: one instruction or prompt per sample.
        image_embeddings: ``h_v`` per sample (B, N, D), placed where an image
            goes in the chat-formatted prompt; ``None`` for text-only prompts.
        drop: bool (B,) — samples whose condition is replaced by the
            unconditional prompt (classifier-free guidance dropout).
    """

    texts: list[str]
    image_embeddings: torch.Tensor | None = None
    drop: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = len(self.texts)
        if self.image_embeddings is not None and self.image_embeddings.shape[0] != n:
            raise ValueError(f"{self.image_embeddings.shape[0]} image embeddings for {n} texts")
        if self.drop is not None and self.drop.shape != (n,):
            raise ValueError(f"drop mask shape {tuple(self.drop.shape)} != ({n},)")

    def with_unconditional(self) -> Condition:
        """The batch stacked as [conditional; unconditional], for classifier-free guidance."""
        n = len(self.texts)
        h_v = self.image_embeddings
        return Condition(
            texts=list(self.texts) * 2,
            image_embeddings=None if h_v is None else torch.cat([h_v, h_v]),
            drop=torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)]),
        )


@dataclass(frozen=True)
class Sampling:
    """How a generation branch samples: guidance scale (1 = off), temperature, random generator."""

    guidance_scale: float = 1.0
    temperature: float = 1.0
    generator: torch.Generator | None = None

    @property
    def guided(self) -> bool:
        """Whether the unconditional half runs too (classifier-free guidance doubles the cost)."""
        return self.guidance_scale != 1.0

    def batch(self, condition: Condition) -> Condition:
        """What the model reads: [conditional; unconditional] when guided, the condition alone otherwise."""
        return condition.with_unconditional() if self.guided else condition


class LatentConditioned(abc.ABC):
    """An adapter that can condition reconstruction on its generation encoder's latents instead of ``h_v``.

    The paper's ablation of the condition's source (understanding embeddings
    vs VAE latents): the same degraded image enters through the generation
    branch's own encoder (VQ-VAE codes, VAE latents) and that branch's input
    embedding, in the slot where ``h_v`` would go. Adapters whose language
    model never reads generation latents (flow matching through a query
    connector) do not offer it.
    """

    @abc.abstractmethod
    def latent_condition(self, pixels: torch.Tensor) -> torch.Tensor:
        """Generation-encoder latents of ``pixels`` in [-1, 1], in the model's input space (B, N, D)."""


class TextAligned(abc.ABC):
    """An adapter whose language model reads text through an input embedding table that ``h_v`` shares.

    ``h_v`` is placed in the language model's input space, next to word
    embeddings. Pretrained UMMs arrive with the two aligned (a text-aligned
    encoder such as SigLIP, an aligner trained on captions); a model trained
    from scratch does not, and ``sft.lambda_align`` can pull them together.
    """

    @abc.abstractmethod
    def pooled_text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean input embedding of each text's tokens, (B, D): the space ``h_v`` is placed in."""

    @abc.abstractmethod
    def condition_states(self, condition: Condition) -> torch.Tensor:
        """The language model's hidden state where generation starts, after each layer: (B, layers, D).

        What the generation branch reads a condition through: a caption and the
        reconstruction condition (template + ``h_v``) of a matching image should
        land close here for RecA's lessons to reach text prompts.
        """


class UMMAdapter(nn.Module, abc.ABC):
    """One unified multimodal model behind the interface RecA needs.

    Subclasses register under a name in :mod:`reca.models.registry` and name
    their parts (``parts()``) so the freezing policy is data, not code.
    """

    #: registry name, e.g. ``"janus_ar"``
    name: ClassVar[str]
    #: parts that stay frozen unless the user asks otherwise (the paper's policy)
    default_frozen: ClassVar[tuple[str, ...]] = ()
    #: whether understanding and generation share parameters (then λ_i2t = 1 keeps
    #: understanding from degrading); decoupled models freeze understanding instead.
    shares_understanding_parameters: ClassVar[bool] = True
    #: schema of ``model.tiny`` in params.yaml: the size of a model built from scratch
    tiny_params: ClassVar[type[BaseModel]]
    #: accepted values of ``model.image_tokenizer``
    image_tokenizers: ClassVar[tuple[str, ...]] = ()

    # ----------------------------------------------------------------- loading
    @classmethod
    @abc.abstractmethod
    def from_pretrained(
        cls, path: str | Path, *, revision: str | None = None, trust_remote_code: bool = False,
        dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa",
    ) -> UMMAdapter:
        """Load from a local directory or a hub id (safetensors weights), every part in ``dtype``.

        Weights are read straight into ``dtype`` (transformers and diffusers load
        on the meta device first), so a bf16 checkpoint never passes through fp32.
        ``attn_implementation`` is the transformers models' attention kernel;
        adapters whose image block attends bidirectionally keep a kernel that
        takes their 4D mask.
        """

    @classmethod
    @abc.abstractmethod
    def build_from_scratch(
        cls, tiny: BaseModel, *, texts: Sequence[str], images: torch.Tensor, seed: int = 0, image_tokenizer: str = ""
    ) -> UMMAdapter:
        """A randomly initialised small model sized by ``tiny`` (the embedded default world, tests).

        ``texts`` are every text the model will read (for a tokenizer built from
        scratch); ``images`` are training images (for fitting image tokenizers).
        """

    @classmethod
    def require_image_tokenizer(cls, name: str) -> None:
        """Refuse a ``model.image_tokenizer`` this adapter cannot build, naming the ones it can."""
        if name not in cls.image_tokenizers:
            raise ValueError(f"model.image_tokenizer {name!r} is not available for {cls.name}; "
                             f"use one of {', '.join(cls.image_tokenizers)}")

    @abc.abstractmethod
    def save_pretrained(self, path: str | Path) -> None:
        """Write a directory that :meth:`from_pretrained` loads (HF format, safetensors)."""

    # ----------------------------------------------------------- understanding
    @property
    @abc.abstractmethod
    def understanding_size(self) -> int:
        """Side, in pixels, of the understanding encoder's input."""

    @property
    @abc.abstractmethod
    def generation_tokenizer(self) -> nn.Module:
        """The generation branch's own image representation (VQ codes or latents): what ``L_reca`` targets.

        It has ``image_size`` (the side of generated images), ``num_tokens`` and
        ``encode`` / ``decode`` between pixels in [-1, 1] and tokens.
        """

    @property
    def generation_size(self) -> int:
        """Side, in pixels, of generated images."""
        return int(self.generation_tokenizer.image_size)

    @property
    def tokens_per_image(self) -> int:
        """Generation-branch tokens per image (the tokens/s throughput unit)."""
        return int(self.generation_tokenizer.num_tokens)

    @abc.abstractmethod
    def understanding_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Output of the (frozen, cacheable) understanding encoder for pixels in [-1, 1]."""

    @abc.abstractmethod
    def understanding_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """``h_v``: encoder features projected into the model's input space."""

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """``h_v`` straight from pixels."""
        return self.understanding_embeddings(self.understanding_features(pixels))

    def loss_generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """Where a loss draws its masks and noise: the global RNG in training (seeded per step by the
        trainer), a fixed seed in eval mode, so validation losses are comparable."""
        if self.training:
            return None
        return torch.Generator(device=device).manual_seed(EVAL_LOSS_SEED)

    def encoder_fingerprint(self) -> str:
        """Hash of the understanding encoder's weights: the key of the embedding cache."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.parts()["understanding_encoder"].state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------------ losses
    @abc.abstractmethod
    def generation_loss(self, condition: Condition, target_pixels: torch.Tensor) -> torch.Tensor:
        """The generation branch's own loss for reproducing ``target_pixels`` given ``condition``."""

    @abc.abstractmethod
    def i2t_loss(self, pixels: torch.Tensor, instructions: Sequence[str], captions: Sequence[str]) -> torch.Tensor:
        """Image-to-text (captioning) loss."""

    # --------------------------------------------------------------- inference
    @torch.no_grad()
    def generate(self, condition: Condition, *, guidance_scale: float = 1.0, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Generate images (B, 3, H, W) in [-1, 1] from a condition (no gradients)."""
        return self.sample(condition, Sampling(guidance_scale, temperature, generator))

    @abc.abstractmethod
    def sample(self, condition: Condition, sampling: Sampling) -> torch.Tensor:
        """The generation branch's own sampler; it runs ``sampling.batch(condition)``."""

    def text_to_image(self, prompts: Sequence[str], **kwargs: Any) -> torch.Tensor:
        """Text-to-image: the condition is the prompt alone (RecA changes nothing at inference)."""
        return self.generate(Condition(texts=list(prompts)), **kwargs)

    def edit(self, pixels: torch.Tensor, instructions: Sequence[str], **kwargs: Any) -> torch.Tensor:
        """Image editing: the condition is the source image's ``h_v`` plus an instruction."""
        return self.generate(Condition(texts=list(instructions), image_embeddings=self.embed_images(pixels)), **kwargs)

    # ------------------------------------------------------------- parameters
    @abc.abstractmethod
    def parts(self) -> dict[str, nn.Module]:
        """Named parts of the model (``understanding_encoder``, ``image_tokenizer``, ...)."""

    def set_frozen(self, frozen: Sequence[str]) -> None:
        """Freeze the named parts and unfreeze everything else."""
        parts = self.parts()
        unknown = sorted(set(frozen) - set(parts))
        if unknown:
            raise ValueError(f"cannot freeze unknown part(s) {unknown}; {self.name} has: {', '.join(parts)}")
        for p in self.parameters():
            p.requires_grad_(True)
        for name in frozen:
            for p in parts[name].parameters():
                p.requires_grad_(False)

    def enable_activation_checkpointing(self) -> None:
        """Recompute the blocks' activations in backward instead of keeping them: memory for compute.

        Every transformers and diffusers model inside the adapter turns on its
        own gradient checkpointing (non-reentrant, so frozen inputs need no
        grad); block stacks of the adapter's own (MAR's) set
        ``activation_checkpointing``.
        """
        from diffusers.models.modeling_utils import ModelMixin
        from transformers import PreTrainedModel

        for module in self.modules():
            if isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing:
                module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            elif isinstance(module, ModelMixin) and module._supports_gradient_checkpointing:
                module.enable_gradient_checkpointing()
            elif hasattr(module, "activation_checkpointing"):
                module.activation_checkpointing = True

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters that receive gradients under the current freezing policy."""
        return [p for p in self.parameters() if p.requires_grad]
