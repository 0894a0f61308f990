"""Masked autoregressive generation over continuous tokens (Harmon) around a transformers LLM.

Images become continuous tokens (VAE latents, or fixed pixel patches in the
embedded default world, :mod:`reca.models.latent_tokenizers`). The MAR
encoder (:mod:`reca.models.mar_modules`) reads them with some positions
masked; its features, projected, are the image block the LLM reads after the
chat-formatted condition, attending bidirectionally inside the block
(:mod:`reca.models.masked_common`); the MAR decoder turns the LLM's states
into one condition per token, and a small per-token head trained by flow
matching predicts the masked tokens. Generation reveals tokens in a random
order over ``decoding_steps`` steps (cosine schedule), sampling each revealed
token with the head.

Understanding uses the same encoder, unmasked: Harmon's ``h_v`` is the MAR
encoder's features of the whole (degraded) image, pooled to the ``h_v`` grid
and projected into the LLM. RecA conditions on exactly that, and the
image-to-text loss reads it through the shared LLM.

Saved layout: the LLM and tokenizer at the top (``AutoModelForCausalLM``
loads it), ``mar_modules/`` and, for a VAE, ``vae/`` (diffusers; the latent space is
saved and loaded by :mod:`reca.models.latent_tokenizers`, shared with the flow-matching adapter).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reca.data.transforms import resize_to
from reca.models import text_tokenizer as tt
from reca.models.base import Condition, Sampling
from reca.models.from_scratch import TinyIterativeParams, tiny_llama
from reca.models.latent_tokenizers import (
    AutoencoderKLTokenizer,
    LatentTokenizer,
    PatchLatents,
    load_latents,
    save_latents,
)
from reca.models.mar_modules import MARModules
from reca.models.masked_common import (
    ImageBlockLMAdapter,
    choose_reveal,
    masked_counts,
    sample_training_mask,
)
from reca.models.registration import ADAPTER_FILE, register

MODULES_DIR = "mar_modules"
#: ``build_from_scratch(image_tokenizer=...)`` values. ``patch_kmeans`` is the default world's name for its
#: stand-in tokenizer; for continuous tokens that stand-in is the fixed patch latent space.
IMAGE_TOKENIZERS = ("patch_latents", "patch_kmeans", "autoencoder_kl")


class TinyMARParams(TinyIterativeParams):
    """Size of the from-scratch Harmon-style model; ``vision_*`` size the MAR encoder (the understanding side)."""

    decoder_layers: int = Field(2, ge=1, description="MAR decoder layers (width and heads as the encoder's).")
    head_width: int = Field(128, ge=8, description="Width of the per-token flow-matching MLP.")
    head_layers: int = Field(3, ge=1, description="Residual blocks of the per-token MLP.")
    sampling_steps: int = Field(10, ge=1, description="Euler steps of the per-token sampler.")
    diffusion_batch_mul: int = Field(4, ge=1, description="Noise draws per masked token per step (MAR's trick).")

    @model_validator(mode="after")
    def _check_pool(self) -> TinyMARParams:
        if self.vision_patch_size % self.token_patch_size:
            raise ValueError(f"vision_patch_size ({self.vision_patch_size}) must be a multiple of token_patch_size "
                             f"({self.token_patch_size}): h_v pools the MAR encoder's token grid")
        return self


@register("harmon_mar")
class HarmonMARAdapter(ImageBlockLMAdapter):
    """Masked autoregressive over continuous tokens (Harmon): MAR encoder/decoder, flow head, LLM."""

    # The MAR encoder is both the understanding encoder and the generation branch's reader: Harmon's
    # recipe trains it; params.yaml may still freeze it to read h_v from the embedding cache.
    default_frozen = ("image_tokenizer",)
    shares_understanding_parameters = True
    tiny_params = TinyMARParams
    image_tokenizers = IMAGE_TOKENIZERS

    def __init__(self, llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, modules: MARModules,
                 latents: LatentTokenizer) -> None:
        cfg = modules.config
        super().__init__(llm, tokenizer, cfg.num_tokens // cfg.understanding_pool**2)
        if (latents.num_tokens, latents.token_dim) != (cfg.num_tokens, cfg.token_dim):
            raise ValueError(f"latent space gives {latents.num_tokens} tokens of {latents.token_dim} values but the "
                             f"MAR modules expect {cfg.num_tokens} of {cfg.token_dim}")
        if cfg.hidden_size != llm.config.hidden_size:
            raise ValueError(f"MAR modules project to {cfg.hidden_size} but the LLM is {llm.config.hidden_size} wide")
        self.mar = modules
        self.latents = latents

    # ----------------------------------------------------------------- loading
    @classmethod
    def build_from_scratch(cls, tiny: TinyMARParams, *, texts: Sequence[str], images: torch.Tensor, seed: int = 0,
                           image_tokenizer: str = "patch_latents") -> HarmonMARAdapter:
        """A random tiny model: word tokenizer, Llama, MAR parts, and the fixed patch latent space.

        ``image_tokenizer="autoencoder_kl"`` uses a random diffusers ``AutoencoderKL``
        instead (only useful to exercise the real-checkpoint code path).
        """
        cls.require_image_tokenizer(image_tokenizer)
        tokenizer = tt.build_word_tokenizer(texts)
        torch.manual_seed(seed)
        llm = tiny_llama(tiny, tokenizer)
        if image_tokenizer == "autoencoder_kl":
            latents: LatentTokenizer = AutoencoderKLTokenizer.tiny(image_size=tiny.image_size,
                                                                   downsample=tiny.token_patch_size)
        else:
            latents = PatchLatents(tiny.image_size, tiny.token_patch_size)
        width, heads = tiny.vision_hidden_size, tiny.vision_heads
        modules = MARModules(
            token_dim=latents.token_dim, num_tokens=latents.num_tokens, hidden_size=tiny.hidden_size,
            encoder_width=width, encoder_layers=tiny.vision_layers, encoder_heads=heads,
            decoder_width=width, decoder_layers=tiny.decoder_layers, decoder_heads=heads,
            head_width=tiny.head_width, head_layers=tiny.head_layers,
            understanding_pool=tiny.vision_patch_size // tiny.token_patch_size,
            decoding_steps=tiny.decoding_steps, sampling_steps=tiny.sampling_steps,
            diffusion_batch_mul=tiny.diffusion_batch_mul,
        )
        return cls(llm, tokenizer, modules, latents)

    @classmethod
    def _from_parts(cls, llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path,
                    record: dict[str, Any], *, revision: str | None, trust_remote_code: bool, dtype: torch.dtype
                    ) -> HarmonMARAdapter:
        modules = MARModules.from_pretrained(path, subfolder=MODULES_DIR, revision=revision, low_cpu_mem_usage=True,
                                             torch_dtype=dtype)
        if "latents" not in record:
            raise FileNotFoundError(f"{Path(path, ADAPTER_FILE)} does not describe the latent space (`latents`); "
                                    "save the model with HarmonMARAdapter.save_pretrained")
        return cls(llm, tokenizer, modules, load_latents(path, record["latents"], dtype))

    def _save_parts(self, directory: Path) -> dict[str, Any]:
        self.mar.save_pretrained(directory / MODULES_DIR, safe_serialization=True)
        return {"latents": save_latents(self.latents, directory)}

    # ----------------------------------------------------------- understanding
    @property
    def understanding_size(self) -> int:
        return self.latents.image_size  # the MAR encoder's token grid is fixed

    @property
    def generation_tokenizer(self) -> LatentTokenizer:
        return self.latents

    def understanding_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The MAR encoder's features of the whole, unmasked image (B, T, encoder width)."""
        tokens = self.latents.encode(resize_to(pixels, self.understanding_size).to(self._device))
        return self.mar.encoder(tokens.to(self._dtype))

    def understanding_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        return self.mar.projector(self.mar.pool(features.to(self._dtype)))

    # ------------------------------------------------------------------ losses
    def _token_conditions(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, tokens: torch.Tensor,
                          masked: torch.Tensor) -> torch.Tensor:
        """Per-token conditions ``z`` (B, T, D): MAR encoder -> LLM image block -> MAR decoder."""
        image = self.mar.projector(self.mar.encoder(tokens.to(self._dtype), masked))
        return self.mar.decoder(self._image_hidden(prefix, prefix_mask, image))

    def generation_loss(self, condition: Condition, target_pixels: torch.Tensor) -> torch.Tensor:
        """Per-token flow-matching loss on the masked tokens of the target (MaskGIT cosine masking ratio)."""
        tokens = self.latents.encode(target_pixels.to(self._device)).to(self._dtype)
        generator = self.loss_generator(self._device)
        masked = sample_training_mask(*tokens.shape[:2], tokens.device, generator)
        prefix, prefix_mask = self._prefix(condition)
        z = self._token_conditions(prefix, prefix_mask, tokens, masked)[masked]
        # MAR's diffusion_batch_mul: several noise draws per token amortise the trunk's forward pass.
        k = self.mar.config.diffusion_batch_mul
        return self.mar.head.loss(tokens[masked].repeat(k, 1), z.repeat(k, 1), generator)

    # --------------------------------------------------------------- inference
    def sample(self, condition: Condition, sampling: Sampling) -> torch.Tensor:
        """MAR decoding: reveal tokens in a random order, sampling each with the per-token head."""
        cfg = self.mar.config
        n, total = len(condition.texts), self.tokens_per_image
        guided = sampling.guided
        prefix, prefix_mask = self._prefix(sampling.batch(condition))
        tokens = torch.zeros(n, total, cfg.token_dim, device=self._device, dtype=self._dtype)
        still_masked = torch.ones(n, total, dtype=torch.bool, device=self._device)
        order = torch.rand(n, total, generator=sampling.generator, device=self._device)
        for keep_masked in masked_counts(total, cfg.decoding_steps):
            z = self._token_conditions(prefix, prefix_mask, torch.cat([tokens, tokens]) if guided else tokens,
                                       torch.cat([still_masked, still_masked]) if guided else still_masked)
            reveal = choose_reveal(still_masked, order, keep_masked)
            z = torch.cat([z[:n][reveal], z[n:][reveal]]) if guided else z[reveal]
            tokens[reveal] = self.mar.head.sample(z, cfg.token_dim, steps=cfg.sampling_steps,
                                                  guidance_scale=sampling.guidance_scale, temperature=sampling.temperature,
                                                  generator=sampling.generator)
            still_masked &= ~reveal
        return self.latents.decode(tokens)

    # ------------------------------------------------------------- parameters
    def parts(self) -> dict[str, nn.Module]:
        return {
            "understanding_encoder": self.mar.encoder,
            "understanding_projector": self.mar.projector,
            "image_tokenizer": self.latents,
            "mar_decoder": self.mar.decoder,
            "diffusion_head": self.mar.head,
            "language_model": self.llm,
        }
