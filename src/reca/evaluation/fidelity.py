"""Reconstruction fidelity: PSNR, SSIM and h_v cosine between an image and its reconstruction.

Used by ``evaluate`` on held-out images reconstructed from their own ``h_v``.
Images are batches (B, 3, H, W) in [-1, 1].

SSIM follows Wang et al. (2004): an 11x11 Gaussian window (sigma 1.5) over
each channel, constants from a dynamic range of 1 (images mapped to [0, 1]),
averaged over channels and positions.

The semantic measure is the cosine similarity between the understanding
embeddings ``h_v`` of the input and of the reconstruction, each flattened over
its tokens: 1 when the model's own understanding branch sees the same thing
in both, whatever the pixel-level error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def psnr(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Per-image PSNR in dB for batches (B, 3, H, W) in [-1, 1]."""
    mse = (_unit(a) - _unit(b)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / (mse + eps))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM for batches (B, C, H, W) in [-1, 1]."""
    x, y = _unit(a), _unit(b)
    c = x.shape[1]
    window = min(window, x.shape[-1], x.shape[-2])
    kernel = _gaussian_window(window, sigma).to(x).expand(c, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.pow(2)
    var_y = blur(y * y) - mu_y.pow(2)
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.pow(2) + mu_y.pow(2) + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


def embedding_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-image cosine similarity of two embedding batches (B, ...), each flattened per image."""
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return F.cosine_similarity(a.float().flatten(1), b.float().flatten(1), dim=1, eps=eps)
