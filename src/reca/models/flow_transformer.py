"""Flow matching on image latents with a diffusers transformer: the flow-matching adapter's generation branch.

* The denoiser is a diffusers ``SanaTransformer2DModel`` (SANA, what OpenUni
  and BLIP3-o build on) or ``PixArtTransformer2DModel``; both cross-attend to
  a conditioning sequence (here: the connector's output). ``DiTTransformer2DModel``
  has no cross-attention and Flux reads packed latents with position ids, so
  both are refused with a message saying why.
* Training follows rectified flow as in SD3 / SANA: ``x_t = (1 - σ) x_0 + σ ε``,
  the model predicts the velocity ``ε - x_0``, and ``σ`` is drawn from a
  logit-normal density on the ``FlowMatchEulerDiscreteScheduler``'s own
  (shifted) sigma table, so training and sampling agree on the time grid.
* Sampling integrates the ODE with the scheduler's Euler steps, with
  classifier-free guidance on [conditional; unconditional] velocity batches.

The latent spaces it runs in (VAEs, or the default world's patches) are
:mod:`reca.models.latent_tokenizers`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, PixArtTransformer2DModel, SanaTransformer2DModel
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.torch_utils import randn_tensor

from reca.models.sampling import guided_logits

TRANSFORMER_CLASSES: dict[str, type[ModelMixin]] = {
    "SanaTransformer2DModel": SanaTransformer2DModel,
    "PixArtTransformer2DModel": PixArtTransformer2DModel,
}
_REFUSED = {
    "DiTTransformer2DModel": "it has no cross-attention (class-conditional only), so it cannot read a text condition",
    "FluxTransformer2DModel": "it reads packed 2x2 latents with text/image position ids, which this adapter "
                              "does not build",
}

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def tiny_transformer(kind: Literal["sana", "pixart"], *, in_channels: int, sample_size: int, patch_size: int,
                     layers: int, heads: int, head_dim: int, caption_channels: int) -> ModelMixin:
    """A small random-weight SANA or PixArt transformer over ``in_channels`` x ``sample_size``² latents."""
    inner = heads * head_dim
    if kind == "sana":
        return SanaTransformer2DModel(
            in_channels=in_channels, out_channels=in_channels, num_attention_heads=heads, attention_head_dim=head_dim,
            num_layers=layers, num_cross_attention_heads=heads, cross_attention_head_dim=head_dim,
            cross_attention_dim=inner, caption_channels=caption_channels, sample_size=sample_size,
            patch_size=patch_size,
            # Sincos positions: at an 8x8 grid the conv MLP alone learns left/right slowly.
            interpolation_scale=1,
        )
    if kind == "pixart":
        return PixArtTransformer2DModel(
            num_attention_heads=heads, attention_head_dim=head_dim, in_channels=in_channels,
            out_channels=in_channels, num_layers=layers, cross_attention_dim=inner, sample_size=sample_size,
            patch_size=patch_size, caption_channels=caption_channels, use_additional_conditions=False,
        )
    raise ValueError(f"unknown transformer kind {kind!r}; choose sana or pixart")


def load_transformer(directory: str | Path, dtype: torch.dtype = torch.float32) -> ModelMixin:
    """Load a diffusers transformer directory (``config.json`` + safetensors) of a supported class."""
    config_path = Path(directory) / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} not found: the model directory needs a diffusers `transformer/`")
    name = json.loads(config_path.read_text())["_class_name"]
    if name in _REFUSED:
        raise ValueError(f"{config_path}: {name} is not supported as the flow-matching denoiser: {_REFUSED[name]}")
    if name not in TRANSFORMER_CLASSES:
        raise ValueError(f"{config_path}: unsupported transformer {name}; supported: {', '.join(TRANSFORMER_CLASSES)}")
    return TRANSFORMER_CLASSES[name].from_pretrained(directory, torch_dtype=dtype)


def caption_channels(transformer: ModelMixin) -> int:
    """Width of the conditioning sequence the transformer expects (its caption projection's input)."""
    return int(transformer.config.caption_channels)


def predict_velocity(transformer: ModelMixin, latents: torch.Tensor, timesteps: torch.Tensor,
                     condition: torch.Tensor) -> torch.Tensor:
    """The transformer's velocity prediction (B, C, H, W) for ``timesteps`` on the 0-1000 scale."""
    dtype = transformer.dtype
    kwargs = {}
    if isinstance(transformer, SanaTransformer2DModel):
        timesteps = timesteps * transformer.config.timestep_scale
    else:
        # PixArt's AdaLN takes resolution and aspect ratio only when trained with them (1024px checkpoints).
        kwargs["added_cond_kwargs"] = {"resolution": None, "aspect_ratio": None}
        if transformer.use_additional_conditions:
            b, _, h, w = latents.shape
            # In pixels: PixArt checkpoints all run on the 8x-downsampling SD VAE.
            kwargs["added_cond_kwargs"] = {
                "resolution": torch.tensor([[h * 8, w * 8]] * b, dtype=dtype, device=latents.device),
                "aspect_ratio": torch.tensor([[h / w]] * b, dtype=dtype, device=latents.device),
            }
    out = transformer(latents.to(dtype), encoder_hidden_states=condition.to(dtype), timestep=timesteps.to(dtype),
                      return_dict=False, **kwargs)[0]
    # PixArt checkpoints that learned the variance predict twice the channels: keep the prediction.
    return out[:, : latents.shape[1]].float()


class FlowMatching:
    """The rectified-flow training pair and Euler sampling, on a ``FlowMatchEulerDiscreteScheduler``'s grid."""

    def __init__(self, scheduler: FlowMatchEulerDiscreteScheduler, *, logit_mean: float = 0.0,
                 logit_std: float = 1.0) -> None:
        if scheduler.config.use_dynamic_shifting:
            raise ValueError("schedulers with use_dynamic_shifting (resolution-dependent shift) are not supported: "
                             "set a fixed `shift` in scheduler/scheduler_config.json")
        self.scheduler = scheduler
        # A private copy keeps the training table intact: set_timesteps rewrites sigmas in place.
        table = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)
        self._sigmas = table.sigmas.float().clone()
        self._timesteps = table.timesteps.float().clone()
        self.logit_mean = logit_mean
        self.logit_std = logit_std

    def training_pair(self, latents: torch.Tensor, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_t, timesteps, velocity target)`` for clean ``latents`` (B, C, H, W)."""
        b, device = latents.shape[0], latents.device
        u = torch.sigmoid(randn_tensor((b,), generator=generator) * self.logit_std + self.logit_mean)
        index = (u * len(self._sigmas)).long().clamp(max=len(self._sigmas) - 1)
        sigma = self._sigmas[index].to(device).view(b, 1, 1, 1)
        noise = randn_tensor(tuple(latents.shape), generator=generator, device=device, dtype=latents.dtype)
        noisy = (1.0 - sigma) * latents + sigma * noise
        return noisy, self._timesteps[index].to(device), noise - latents

    @torch.no_grad()
    def sample(self, velocity: VelocityFn, shape: tuple[int, ...], *, steps: int, guidance_scale: float = 1.0,
               temperature: float = 1.0, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """Integrate from noise to latents with ``steps`` Euler steps.

        ``velocity(x, t)`` predicts on a batch; with ``guidance_scale != 1`` it
        is called on [x; x] and must return [conditional; unconditional]
        predictions. ``temperature`` scales the starting noise (1 = the
        trained distribution; lower trades diversity for typicality).
        """
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps, device=device)
        x = randn_tensor(shape, generator=generator, device=torch.device(device)) * temperature
        guided = guidance_scale != 1.0
        for t in scheduler.timesteps:
            x_in = torch.cat([x, x]) if guided else x
            v = velocity(x_in, t.expand(x_in.shape[0]))
            v = guided_logits(v, guidance_scale) if guided else v
            x = scheduler.step(v, t, x, return_dict=False)[0]
        return x
