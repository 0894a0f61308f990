"""Tests for the patch k-means image tokenizer (reca.models.image_tokenizers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from reca.data.transforms import to_tensor
from reca.models.image_tokenizers import CODEBOOK_FILE, PatchKMeansTokenizer, describe

# Values on the 1/64 grid in [-1, 1].
FLAT_VALUES = [(-1.0, -1.0, -1.0), (1.0, 1.0, 1.0), (1.0, -1.0, -0.5), (0.25, 0.5, -0.75), (0.0, 0.0, 0.0)]


def _flat(colours: list[tuple[float, float, float]], size: int = 32) -> torch.Tensor:
    return torch.stack(
        [torch.tensor(c, dtype=torch.float32)[:, None, None].expand(3, size, size) for c in colours]
    )


def _two_colour_images() -> torch.Tensor:
    """Flat images plus a half/half split at a patch boundary: still only a few distinct patches."""
    imgs = _flat(FLAT_VALUES)
    split = _flat([(-1.0, -1.0, -1.0)])
    split[:, :, :, 16:] = torch.tensor([1.0, -1.0, -0.5])[:, None, None]
    return torch.cat([imgs, split])


def _random_images(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _mse(tok: PatchKMeansTokenizer, pixels: torch.Tensor) -> float:
    return float((tok.decode(tok.encode(pixels)) - pixels).pow(2).mean())


def test_few_distinct_patches_reconstruct_exactly() -> None:
    pixels = _two_colour_images()
    tok = PatchKMeansTokenizer.fit(pixels, num_codes=16, patch_size=4)
    assert tok.num_codes == 16
    assert tok.codebook.shape == (16, 48)
    assert torch.equal(tok.decode(tok.encode(pixels)), pixels)


def test_few_distinct_uint8_colours_reconstruct_exactly() -> None:
    colours = [(200, 30, 90), (17, 130, 250), (0, 0, 0), (255, 255, 255)]
    pixels = torch.stack([to_tensor(Image.new("RGB", (32, 32), c)) for c in colours])
    tok = PatchKMeansTokenizer.fit(pixels, num_codes=16, patch_size=4)
    assert torch.equal(tok.decode(tok.encode(pixels)), pixels)


def test_kmeans_beats_a_random_codebook_when_codes_are_scarce() -> None:
    pixels = _random_images()
    tok = PatchKMeansTokenizer.fit(pixels, num_codes=32, patch_size=4, iters=10)
    random_codebook = torch.rand(32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    baseline = PatchKMeansTokenizer(random_codebook, patch_size=4, image_size=32)
    assert _mse(tok, pixels) < 0.8 * _mse(baseline, pixels)


def test_more_lloyd_iterations_do_not_increase_error() -> None:
    pixels = _random_images(4, seed=3)
    one = PatchKMeansTokenizer.fit(pixels, num_codes=16, patch_size=4, iters=1)
    many = PatchKMeansTokenizer.fit(pixels, num_codes=16, patch_size=4, iters=10)
    assert _mse(many, pixels) <= _mse(one, pixels) + 1e-6


def test_fit_is_deterministic_for_a_seed() -> None:
    pixels = _random_images(4, seed=2)
    a = PatchKMeansTokenizer.fit(pixels, num_codes=16, patch_size=4, iters=3, seed=5)
    b = PatchKMeansTokenizer.fit(pixels, num_codes=16, patch_size=4, iters=3, seed=5)
    assert torch.equal(a.codebook, b.codebook)


def test_encode_shape_and_range() -> None:
    tok = PatchKMeansTokenizer.fit(_random_images(2), num_codes=8, patch_size=4, iters=2)
    ids = tok.encode(_random_images(3, seed=9))
    assert ids.shape == (3, (32 // 4) ** 2)
    assert ids.dtype == torch.int64
    assert int(ids.min()) >= 0 and int(ids.max()) < 8
    assert tok.num_tokens == 64 and tok.grid == 8
    assert tok.decode(ids).shape == (3, 3, 32, 32)


def test_encode_maps_each_patch_to_its_nearest_code_in_raster_order() -> None:
    codebook = torch.stack([torch.full((48,), -1.0), torch.full((48,), 1.0)])
    tok = PatchKMeansTokenizer(codebook, patch_size=4, image_size=8)
    img = torch.full((1, 3, 8, 8), -0.9)
    img[:, :, 0:4, 4:8] = 0.8  # top-right patch
    assert tok.encode(img).tolist() == [[0, 1, 0, 0]]
    decoded = tok.decode(torch.tensor([[0, 1, 0, 0]]))
    assert (decoded[:, :, 0:4, 4:8] == 1.0).all()
    assert (decoded[:, :, 4:, :] == -1.0).all()


def test_save_load_round_trip(tmp_path: Path) -> None:
    pixels = _random_images(4)
    tok = PatchKMeansTokenizer.fit(pixels, num_codes=16, patch_size=4, iters=2)
    tok.save(tmp_path)
    assert (tmp_path / CODEBOOK_FILE).exists()
    loaded = PatchKMeansTokenizer.load(tmp_path)
    assert (loaded.patch_size, loaded.image_size, loaded.num_codes) == (4, 32, 16)
    assert torch.equal(loaded.codebook, tok.codebook)
    assert torch.equal(loaded.encode(pixels), tok.encode(pixels))


def test_load_from_incomplete_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=CODEBOOK_FILE):
        PatchKMeansTokenizer.load(tmp_path)


@pytest.mark.parametrize("shape", [(16, 47), (16,), (2, 16, 48)])
def test_bad_codebook_shape_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="codebook must be"):
        PatchKMeansTokenizer(torch.zeros(shape), patch_size=4, image_size=32)


def test_image_size_not_divisible_by_patch_raises() -> None:
    with pytest.raises(ValueError, match="divisible"):
        PatchKMeansTokenizer(torch.zeros(4, 48), patch_size=4, image_size=30)


def test_describe_names_type_codes_and_grid() -> None:
    tok = PatchKMeansTokenizer(torch.zeros(4, 48), patch_size=4, image_size=32)
    assert json.loads(describe(tok)) == {"type": "PatchKMeansTokenizer", "codes": 4, "grid": 8}
