"""Resizing and degradation of images (PIL in, PIL out), and PIL <-> tensor conversion.

`degrade` makes the understanding-input copy low-resolution or blurred on
purpose: a high-resolution condition lets the generator copy pixels instead of
learning semantics, and the reconstruction loss collapses ("token copying").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

if TYPE_CHECKING:
    # Imported inside the tensor helpers at run time: `degrade`'s worker processes
    # import this module and should not pay for torch's import.
    import torch


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to ``size`` then crop the centre square."""
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))


def resize_pad(image: Image.Image, size: int, fill: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Scale the longer side to ``size`` and pad the rest with ``fill``, centred."""
    w, h = image.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(image, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def resize(image: Image.Image, size: int, mode: str) -> Image.Image:
    """Dispatch on ``mode`` (``center_crop`` or ``pad``)."""
    if mode == "center_crop":
        return resize_center_crop(image, size)
    if mode == "pad":
        return resize_pad(image, size)
    raise ValueError(f"unknown resize mode {mode!r}; allowed: center_crop, pad")


def degrade(image: Image.Image, blur_sigma: float = 0.0, downup_factor: float = 1.0) -> Image.Image:
    """Blur and/or down-then-up scale an image, keeping its size."""
    if downup_factor < 1.0:
        w, h = image.size
        small = image.resize((max(1, round(w * downup_factor)), max(1, round(h * downup_factor))),
                             Image.Resampling.BILINEAR)
        image = small.resize((w, h), Image.Resampling.BILINEAR)
    if blur_sigma > 0:
        image = image.filter(ImageFilter.GaussianBlur(radius=blur_sigma))
    return image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor (3, H, W) in [-1, 1]."""

    return array_to_tensor(np.asarray(image.convert("RGB")))


def array_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """RGB pixels (H, W, 3) uint8 -> float tensor (3, H, W) in [-1, 1]."""
    import torch

    arr = pixels.astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [-1, 1] -> RGB PIL image."""
    arr = ((tensor.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().byte()
    return Image.fromarray(arr.permute(1, 2, 0).cpu().numpy(), mode="RGB")


def resize_to(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic antialiased resize of a (B, C, H, W) batch to ``size`` x ``size`` (a no-op at that size already)."""
    if pixels.shape[-1] == size and pixels.shape[-2] == size:
        return pixels
    import torch.nn.functional as F

    return F.interpolate(pixels, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
