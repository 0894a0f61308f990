"""The MAR parts of the Harmon adapter: encoder, decoder and per-token diffusion head.

Harmon wraps a language model between the two halves of MAR
(masked autoregressive generation over continuous tokens):

* :class:`MAREncoder` — a small bidirectional ViT over the image's continuous
  tokens in which masked positions read a learned ``[MASK]`` vector. On the
  whole (unmasked) image its output is Harmon's understanding feature, the
  ``h_v`` of RecA; on a partly masked image it is what the LLM reads.
* :class:`TokenTransformer` (the decoder) — maps the LLM's image-block
  states to one condition vector ``z`` per token.
* :class:`FlowHead` — MAR's per-token MLP with adaptive layer norm, trained
  here with the flow-matching (rectified-flow) objective rather than MAR's
  DDPM: ``x_t = (1 - t) x + t ε``, regress the velocity ``ε - x``; sampling
  integrates the velocity from noise with Euler steps. Flow matching needs no
  noise schedule, and the same objective drives the flow-matching paradigm.

:class:`MARModules` holds all four (with the ``h_v`` projector) as one
diffusers model, saved and loaded with ``save_pretrained`` /
``from_pretrained`` in diffusers format.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn
from torch.utils.checkpoint import checkpoint

from reca.models.from_scratch import mlp_projector
from reca.models.sampling import guided_logits


class TokenTransformer(nn.Module):
    """A pre-norm bidirectional transformer over a fixed grid of tokens, with learned positions."""

    def __init__(self, in_dim: int, width: int, layers: int, heads: int, num_tokens: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, width)
        self.pos = nn.Parameter(torch.randn(1, num_tokens, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        #: recompute each block in backward (``UMMAdapter.enable_activation_checkpointing``)
        self.activation_checkpointing = False

    def _run(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.pos
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            for block in self.blocks.layers:
                h = checkpoint(block, h, use_reentrant=False)
            return self.norm(h)
        return self.norm(self.blocks(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.proj(x))


class MAREncoder(TokenTransformer):
    """The MAR encoder: continuous tokens, masked positions replaced by a learned ``[MASK]`` vector."""

    def __init__(self, in_dim: int, width: int, layers: int, heads: int, num_tokens: int) -> None:
        super().__init__(in_dim, width, layers, heads, num_tokens)
        self.mask_token = nn.Parameter(torch.zeros(width))

    def forward(self, tokens: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        h = self.proj(tokens)
        if masked is not None:
            h = torch.where(masked[..., None], self.mask_token.to(h.dtype), h)
        return self._run(h)


class AdaLNBlock(nn.Module):
    """Residual MLP block modulated (shift, scale, gate) by the condition, zero-initialised like DiT."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(c).chunk(3, dim=-1)
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class FlowHead(nn.Module):
    """MAR's per-token denoiser: the velocity ``v(x_t, t | z)`` of one continuous token."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int) -> None:
        super().__init__()
        self.inp = nn.Linear(token_dim, width)
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time = TimestepEmbedding(width, width)
        self.cond = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(AdaLNBlock(width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.out_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, token_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # Timesteps expects DDPM-like magnitudes: t in [0, 1] scaled to [0, 1000].
        c = self.time(self.time_proj(t * 1000).to(x.dtype)) + self.cond(z)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.out_modulation(c).chunk(2, dim=-1)
        return self.out(self.out_norm(h) * (1 + scale) + shift)

    def loss(self, x: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Flow-matching loss of tokens ``x`` (N, C) given their conditions ``z`` (N, D)."""
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        t = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        x_t = (1 - t[:, None]) * x + t[:, None] * noise
        return F.mse_loss(self(x_t, t, z).float(), (noise - x).float())

    @torch.no_grad()
    def sample(self, z: torch.Tensor, token_dim: int, *, steps: int, guidance_scale: float = 1.0,
               temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Euler-integrate from noise (scaled by ``temperature``) to tokens (N, C).

        With guidance, ``z`` is stacked [conditional; unconditional] (2N, D) and
        the two velocities are combined as in classifier-free guidance.
        """
        guided = guidance_scale != 1.0
        n = z.shape[0] // 2 if guided else z.shape[0]
        x = torch.randn((n, token_dim), generator=generator, device=z.device, dtype=z.dtype) * temperature
        times = torch.linspace(1.0, 0.0, steps + 1, device=z.device, dtype=z.dtype)
        for i in range(steps):
            x_in = torch.cat([x, x]) if guided else x
            v = self(x_in, times[i].expand(x_in.shape[0]), z)
            v = guided_logits(v, guidance_scale) if guided else v
            x = x - (times[i] - times[i + 1]) * v
        return x


class MARModules(ModelMixin, ConfigMixin):
    """Harmon's image-side parts around the LLM, as one diffusers model (``mar_modules/``)."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, token_dim: int, num_tokens: int, hidden_size: int, encoder_width: int, encoder_layers: int,
                 encoder_heads: int, decoder_width: int, decoder_layers: int, decoder_heads: int, head_width: int,
                 head_layers: int, understanding_pool: int = 1, decoding_steps: int = 8, sampling_steps: int = 10,
                 diffusion_batch_mul: int = 4) -> None:
        super().__init__()
        grid = int(num_tokens**0.5)
        if grid * grid != num_tokens or grid % understanding_pool:
            raise ValueError(f"{num_tokens} tokens are not a square grid divisible by the h_v pooling "
                             f"{understanding_pool}")
        self.encoder = MAREncoder(token_dim, encoder_width, encoder_layers, encoder_heads, num_tokens)
        self.projector = mlp_projector(encoder_width, hidden_size)
        self.decoder = TokenTransformer(hidden_size, decoder_width, decoder_layers, decoder_heads, num_tokens)
        self.head = FlowHead(token_dim, decoder_width, head_width, head_layers)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Average encoder features (B, T, D) over ``understanding_pool`` x ``understanding_pool`` cells."""
        k = self.config.understanding_pool
        if k == 1:
            return features
        b, t, d = features.shape
        g = int(t**0.5)
        grid = features.transpose(1, 2).reshape(b, d, g, g)
        return F.avg_pool2d(grid, k).flatten(2).transpose(1, 2)
