"""The latent spaces the flow-matching transformer runs in, and where they live in a model directory.

Built on the shared :class:`~reca.models.latent_tokenizers.LatentTokenizer`
interface (continuous tokens (B, T, C)); the diffusion transformer reads the
same tokens as a (B, C, grid, grid) latent image (:func:`to_grid` /
:func:`to_tokens`).

* ``AutoencoderKL`` (SD / Flux VAEs) through
  :class:`~reca.models.latent_tokenizers.AutoencoderKLTokenizer`;
* ``AutoencoderDC`` (SANA's deep-compression autoencoder) through
  :class:`AutoencoderDCTokenizer` here;
* :class:`~reca.models.latent_tokenizers.PatchLatents`, the fixed patchify of
  the embedded default world (a VAE trained from scratch on two CPU cores
  cannot decode in the time the pipeline has).

A VAE is saved as a diffusers ``vae/`` subfolder; the patch space, having no
weights, is described in the adapter's JSON (:func:`save_latents` returns
that description, :func:`load_latents` reads it back).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderDC, AutoencoderKL

from reca.models.latent_tokenizers import AutoencoderKLTokenizer, LatentTokenizer, PatchLatents

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


def load_latents(directory: str | Path, spec: dict[str, Any]) -> LatentTokenizer:
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
        return AutoencoderKLTokenizer(AutoencoderKL.from_pretrained(vae_dir, torch_dtype=torch.float32), image_size)
    if name == "AutoencoderDC":
        return AutoencoderDCTokenizer(AutoencoderDC.from_pretrained(vae_dir, torch_dtype=torch.float32), image_size)
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
