"""Image tokenizers on diffusers autoencoders, the fixed latent space of the default world, and how a model
directory stores a latent space.

The masked-token, MAR and flow-matching generation branches
(:mod:`reca.models.masked`, :mod:`reca.models.mar`,
:mod:`reca.models.flow_matching`) read images in their own representation:

* :class:`VQModelTokenizer` — discrete ids from a diffusers ``VQModel`` (the
  MAGVIT-style VQ of Show-o checkpoints converted to diffusers format), behind
  the same :class:`~reca.models.image_tokenizers.ImageTokenizer` interface as
  the patch k-means codebook of the default world.
* :class:`LatentTokenizer` — continuous tokens (B, T, C) for MAR:
  :class:`AutoencoderKLTokenizer` wraps a diffusers ``AutoencoderKL`` (Harmon
  uses MAR's KL-16 VAE; SD / Flux VAEs too); :class:`AutoencoderDCTokenizer`
  wraps SANA's deep-compression ``AutoencoderDC``; :class:`PatchLatents` is a
  fixed, parameter-free patchify of pixels. A VAE trained from scratch on a
  laptop cannot decode usefully, so the embedded default world generates in
  patch space, where decoding is exact.

The flow-matching transformer reads the same continuous tokens as a
(B, C, grid, grid) latent image (:func:`to_grid` / :func:`to_tokens`). A VAE
is saved as a diffusers ``vae/`` subfolder; the patch space, having no
weights, is described in the adapter's JSON (:func:`save_latents` returns that
description, :func:`load_latents` reads it back).
"""

from __future__ import annotations

import abc
import json
import math
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderDC, AutoencoderKL, VQModel
from torch import nn

from reca.models.image_tokenizers import ImageTokenizer, _patchify, _unpatchify


def _downsample(block_out_channels: tuple[int, ...] | list[int]) -> int:
    # diffusers' Encoder halves the resolution once per down block after the first.
    return 2 ** (len(block_out_channels) - 1)


class VQModelTokenizer(ImageTokenizer):
    """A diffusers ``VQModel``: pixels in [-1, 1] to (B, grid*grid) codebook ids and back."""

    def __init__(self, vq: VQModel, image_size: int | None = None) -> None:
        super().__init__()
        self.vq = vq
        self.image_size = int(image_size or vq.config.sample_size)
        factor = _downsample(vq.config.block_out_channels)
        if self.image_size % factor:
            raise ValueError(f"image size {self.image_size} is not divisible by the VQ's downsampling {factor}")
        self.grid = self.image_size // factor
        self.num_codes = int(vq.config.num_vq_embeddings)

    @classmethod
    def tiny(cls, *, image_size: int, patch_size: int, num_codes: int) -> VQModelTokenizer:
        """A random-weight ``VQModel`` with one token per ``patch_size`` pixels (tests, from-scratch models)."""
        levels = int(math.log2(patch_size))
        if 2**levels != patch_size:
            raise ValueError(f"a VQModel downsamples by powers of two; token patch size {patch_size} is not one")
        vq = VQModel(
            block_out_channels=(32,) * (levels + 1),  # GroupNorm in the blocks needs multiples of 32
            down_block_types=("DownEncoderBlock2D",) * (levels + 1),
            up_block_types=("UpDecoderBlock2D",) * (levels + 1),
            latent_channels=8,
            num_vq_embeddings=num_codes,
            sample_size=image_size,
        )
        return cls(vq, image_size)

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.vq.parameters()).dtype

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        latents = self.vq.encode(pixels.to(self._dtype)).latents
        _, _, (_, _, ids) = self.vq.quantize(latents)
        return ids.reshape(pixels.shape[0], -1)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        dim = self.vq.quantize.vq_embed_dim
        quant = self.vq.quantize.get_codebook_entry(ids.reshape(-1), (ids.shape[0], self.grid, self.grid, dim))
        return self.vq.decode(quant, force_not_quantize=True).sample.float().clamp(-1, 1)


class LatentTokenizer(nn.Module, abc.ABC):
    """Interface: ``encode`` pixels in [-1, 1] to continuous tokens (B, grid*grid, token_dim), ``decode`` back."""

    token_dim: int
    grid: int  # tokens per side
    image_size: int  # pixels per side of decoded images

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @abc.abstractmethod
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] to tokens."""

    @abc.abstractmethod
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens back to pixels (B, 3, H, W) in [-1, 1]."""


class PatchLatents(LatentTokenizer):
    """The fixed latent space of the default world: each token is one ``patch x patch`` block of pixels."""

    def __init__(self, image_size: int, patch_size: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        self.image_size = image_size
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.token_dim = 3 * patch_size * patch_size

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return _patchify(pixels.float(), self.patch_size)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return _unpatchify(tokens.float(), self.patch_size, self.grid).clamp(-1, 1)


class AutoencoderKLTokenizer(LatentTokenizer):
    """A diffusers ``AutoencoderKL``; ``patch_size x patch_size`` latent pixels make one token.

    Latents are normalised with the VAE's own ``shift_factor`` and
    ``scaling_factor`` (unit variance is what the per-token diffusion loss
    assumes), and encoded with the posterior mean so that targets and cached
    features are deterministic.
    """

    def __init__(self, vae: AutoencoderKL, image_size: int | None = None, patch_size: int = 1) -> None:
        super().__init__()
        self.vae = vae
        self.image_size = int(image_size or vae.config.sample_size)
        factor = _downsample(vae.config.block_out_channels)
        if self.image_size % (factor * patch_size):
            raise ValueError(f"image size {self.image_size} is not divisible by VAE downsampling x patch "
                             f"({factor} x {patch_size})")
        self.patch_size = patch_size
        self.latent_side = self.image_size // factor
        self.grid = self.latent_side // patch_size
        self.channels = int(vae.config.latent_channels)
        self.token_dim = self.channels * patch_size * patch_size

    @classmethod
    def tiny(cls, *, image_size: int, downsample: int, latent_channels: int = 4) -> AutoencoderKLTokenizer:
        """A random-weight ``AutoencoderKL`` (tests of the real-checkpoint code path)."""
        levels = int(math.log2(downsample))
        vae = AutoencoderKL(
            block_out_channels=(32,) * (levels + 1),
            down_block_types=("DownEncoderBlock2D",) * (levels + 1),
            up_block_types=("UpDecoderBlock2D",) * (levels + 1),
            latent_channels=latent_channels,
            sample_size=image_size,
        )
        return cls(vae, image_size)

    def _scale(self) -> tuple[float, float]:
        return float(self.vae.config.shift_factor or 0.0), float(self.vae.config.scaling_factor)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        latents = self.vae.encode(pixels.to(dtype)).latent_dist.mean.float()
        shift, scale = self._scale()
        latents = (latents - shift) * scale
        b, c, p, g = latents.shape[0], self.channels, self.patch_size, self.grid
        x = latents.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, g * g, c * p * p)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        b, c, p, g = tokens.shape[0], self.channels, self.patch_size, self.grid
        latents = tokens.float().reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, g * p, g * p)
        shift, scale = self._scale()
        dtype = next(self.vae.parameters()).dtype
        return self.vae.decode((latents / scale + shift).to(dtype)).sample.float().clamp(-1, 1)


#: the subfolder of a model directory that holds a VAE latent space (diffusers format)
VAE_SUBFOLDER = "vae"


class AutoencoderDCTokenizer(LatentTokenizer):
    """A diffusers ``AutoencoderDC``: one token per latent pixel, scaled by the VAE's ``scaling_factor``."""

    def __init__(self, vae: AutoencoderDC, image_size: int) -> None:
        super().__init__()
        factor = int(vae.spatial_compression_ratio)
        if image_size % factor:
            raise ValueError(f"image size {image_size} is not divisible by the DC-AE's compression {factor}")
        self.vae = vae
        self.image_size = image_size
        self.grid = image_size // factor
        self.token_dim = int(vae.config.latent_channels)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        latents = self.vae.encode(pixels.to(dtype)).latent.float() * self.vae.config.scaling_factor
        return to_tokens(latents)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        latents = to_grid(tokens, self.grid) / self.vae.config.scaling_factor
        return self.vae.decode(latents.to(dtype)).sample.float().clamp(-1, 1)


def to_grid(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """Tokens (B, grid*grid, C) in row-major order as a latent image (B, C, grid, grid)."""
    b, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, grid, grid)


def to_tokens(latents: torch.Tensor) -> torch.Tensor:
    """A latent image (B, C, H, W) as row-major tokens (B, H*W, C)."""
    return latents.flatten(2).transpose(1, 2)


def save_latents(latents: LatentTokenizer, directory: str | Path) -> dict[str, Any]:
    """Write a VAE's diffusers subfolder (if any); return the JSON description :func:`load_latents` reads."""
    if isinstance(latents, PatchLatents):
        return {"type": "patch", "image_size": latents.image_size, "patch_size": latents.patch_size}
    vae = getattr(latents, "vae", None)
    if vae is None:
        raise TypeError(f"cannot save latent space {type(latents).__name__}")
    if getattr(latents, "patch_size", 1) != 1:
        raise ValueError("the flow-matching transformer patchifies latents itself: use a VAE tokenizer with patch 1")
    vae.save_pretrained(Path(directory) / VAE_SUBFOLDER, safe_serialization=True)
    return {"type": "vae", "image_size": latents.image_size}


def load_latents(directory: str | Path, spec: dict[str, Any], dtype: torch.dtype = torch.float32) -> LatentTokenizer:
    """The latent space a model directory describes (``spec`` comes from the adapter's JSON)."""
    kind = spec.get("type")
    if kind == "patch":
        return PatchLatents(int(spec["image_size"]), int(spec["patch_size"]))
    if kind != "vae":
        raise ValueError(f"unknown latent space type {kind!r} in the adapter JSON; expected 'patch' or 'vae'")
    vae_dir = Path(directory) / VAE_SUBFOLDER
    config = vae_dir / "config.json"
    if not config.exists():
        raise FileNotFoundError(f"{config} not found: the adapter JSON names a VAE but `{VAE_SUBFOLDER}/` is missing")
    name = json.loads(config.read_text())["_class_name"]
    image_size = int(spec["image_size"])
    if name == "AutoencoderKL":
        return AutoencoderKLTokenizer(AutoencoderKL.from_pretrained(vae_dir, torch_dtype=dtype), image_size)
    if name == "AutoencoderDC":
        return AutoencoderDCTokenizer(AutoencoderDC.from_pretrained(vae_dir, torch_dtype=dtype), image_size)
    raise ValueError(f"{config}: unsupported VAE {name}; supported: AutoencoderKL, AutoencoderDC")


def tiny_autoencoder_dc(*, image_size: int, downsample: int, latent_channels: int = 8) -> AutoencoderDCTokenizer:
    """A random-weight ``AutoencoderDC`` compressing ``downsample`` x, to exercise the DC-AE code path."""
    levels = int(math.log2(downsample))
    if 2**levels != downsample:
        raise ValueError(f"a DC-AE downsamples by powers of two; {downsample} is not one")
    blocks = levels + 1
    channels = (16,) + (32,) * levels
    vae = AutoencoderDC(
        latent_channels=latent_channels,
        attention_head_dim=8,
        encoder_block_types="ResBlock",
        decoder_block_types="ResBlock",
        encoder_block_out_channels=channels,
        decoder_block_out_channels=channels,
        encoder_layers_per_block=(1,) * blocks,
        decoder_layers_per_block=(1,) * blocks,
        encoder_qkv_multiscales=((),) * blocks,
        decoder_qkv_multiscales=((),) * blocks,
    )
    return AutoencoderDCTokenizer(vae, image_size)
