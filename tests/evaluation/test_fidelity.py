"""Tests for reconstruction fidelity metrics (reca.evaluation.fidelity)."""

from __future__ import annotations

import math

import pytest
import torch

from reca.evaluation.fidelity import psnr, ssim


def _images(b: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Smooth-ish content in [-0.8, 0.6] so offsets of +0.2 stay inside [-1, 1].
    base = torch.rand(b, 3, size // 4, size // 4, generator=g)
    up = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    return up * 1.4 - 0.8


def _noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def test_identical_images_have_ssim_one_and_very_high_psnr() -> None:
    x = _images()
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-5)
    assert (psnr(x, x) > 90).all()


def test_psnr_of_constant_offset_matches_analytic_value() -> None:
    x = _images()
    # 0.2 in [-1, 1] is 0.1 in [0, 1]: mse 0.01 -> 10*log10(1/0.01) = 20 dB.
    assert torch.allclose(psnr(x, x + 0.2), torch.full((3,), 20.0), atol=1e-3)
    # 0.05 in [-1, 1] -> 0.025 in [0, 1] -> mse 6.25e-4 -> 32.04 dB.
    assert torch.allclose(psnr(x, x - 0.05), torch.full((3,), 10 * math.log10(1 / 6.25e-4)), atol=1e-3)


def test_psnr_is_symmetric_and_per_image() -> None:
    x = _images(2)
    y = x.clone()
    y[1] += 0.2
    out = psnr(x, y)
    assert out.shape == (2,)
    assert out[0] > 90
    assert out[1].item() == pytest.approx(20.0, abs=1e-3)
    assert torch.allclose(psnr(y, x), out)


def test_psnr_clamps_inputs_to_valid_range() -> None:
    x = torch.full((1, 3, 8, 8), 1.0)
    # Values above 1 are clamped, so 1.5 vs 1.0 is a perfect match.
    assert psnr(x, x + 0.5).item() > 90
    # Black vs white: mse 1 -> 0 dB.
    assert psnr(-x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_ssim_decreases_monotonically_with_noise() -> None:
    x = _images(2)
    scores = [ssim(x, _noisy(x, s)) for s in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)]
    for before, after in zip(scores, scores[1:], strict=False):
        assert (after < before).all()
    assert (scores[-1] < 0.5).all()


def test_psnr_decreases_monotonically_with_noise() -> None:
    x = _images(2)
    scores = [psnr(x, _noisy(x, s)) for s in (0.01, 0.05, 0.1, 0.3)]
    for before, after in zip(scores, scores[1:], strict=False):
        assert (after < before).all()


def test_ssim_is_per_image_and_symmetric() -> None:
    x = _images(4)
    y = x.clone()
    y[2] = _noisy(x[2:3], 0.3)[0]
    out = ssim(x, y)
    assert out.shape == (4,)
    assert torch.allclose(out[[0, 1, 3]], torch.ones(3), atol=1e-5)
    assert out[2] < 0.9
    assert torch.allclose(ssim(y, x), out, atol=1e-6)


def test_ssim_of_unrelated_images_is_low() -> None:
    a, b = _noisy(torch.zeros(2, 3, 32, 32), 0.5, seed=1), _noisy(torch.zeros(2, 3, 32, 32), 0.5, seed=2)
    assert (ssim(a, b).abs() < 0.1).all()


def test_ssim_handles_images_smaller_than_the_window() -> None:
    x = _images(2, size=8)
    out = ssim(x, x)
    assert out.shape == (2,)
    assert torch.allclose(out, torch.ones(2), atol=1e-5)
    assert (ssim(x, _noisy(x, 0.3)) < 0.95).all()


def test_embedding_cosine_is_per_image_over_flattened_tokens() -> None:
    from reca.evaluation.fidelity import embedding_cosine

    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 8, generator=g)
    b = a.clone()
    b[1] = -a[1]
    b[2] = 2.5 * a[2]
    out = embedding_cosine(a, b)
    assert out.shape == (3,)
    assert torch.allclose(out, torch.tensor([1.0, -1.0, 1.0]), atol=1e-5)
    unrelated = embedding_cosine(torch.randn(64, 16, 32, generator=g), torch.randn(64, 16, 32, generator=g))
    assert unrelated.abs().mean() < 0.05
    with pytest.raises(ValueError, match="shapes differ"):
        embedding_cosine(a, a[:, :2])
