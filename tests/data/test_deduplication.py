"""Tests for perceptual hashing and near-duplicate search (reca.data.perceptual_hash, reca.data.deduplication)."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image, ImageFilter

from reca.data.deduplication import Deduplicator, NearDuplicateIndex
from reca.data.perceptual_hash import colour_distance, colour_signature, hamming, hash_to_hex, phash
from reca_fixtures.images import noise_image, scene_image

SIG = bytes(192)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phash_survives_resize_jpeg_and_blur_but_not_another_picture(seed: int) -> None:
    img = scene_image(128, seed=seed)
    h = phash(img)
    for variant in (img.resize((64, 64)), _jpeg(img, 60), img.filter(ImageFilter.GaussianBlur(1.0)),
                    img.resize((200, 200))):
        assert hamming(h, phash(variant)) <= 4
    assert hamming(h, phash(scene_image(128, seed=seed + 10))) > 12
    assert hamming(h, phash(noise_image(128, 128, seed))) > 12


def test_colour_signature_tells_recoloured_objects_apart() -> None:
    img = Image.new("RGB", (64, 64), (128, 128, 128))
    red, blue = img.copy(), img.copy()
    red.paste((220, 30, 30), (16, 16, 40, 40))
    blue.paste((30, 30, 220), (16, 16, 40, 40))
    assert hamming(phash(red), phash(blue)) <= 2  # luminance alone cannot tell them apart
    assert colour_distance(colour_signature(red), colour_signature(blue)) > 100
    assert colour_distance(colour_signature(red), colour_signature(_jpeg(red, 90))) < 10


def test_hash_hex_is_fixed_width() -> None:
    assert hash_to_hex(5) == "0000000000000005"
    assert hash_to_hex((1 << 64) - 1) == "f" * 16


@pytest.mark.parametrize("max_bits", [0, 3, 6, 9])
def test_index_finds_exactly_what_brute_force_finds(max_bits: int) -> None:
    rng = random.Random(max_bits)
    index = NearDuplicateIndex(max_bits, max_colour_diff=255)
    kept: list[int] = []
    for i in range(400):
        if kept and rng.random() < 0.5:  # a perturbed copy of a kept hash
            value = rng.choice(kept)
            for bit in rng.sample(range(64), rng.randint(0, 2 * max_bits + 1)):
                value ^= 1 << bit
        else:
            value = rng.getrandbits(64)
        found = index.find(value, SIG)
        distances = [hamming(value, k) for k in kept]
        expected = min(distances) if distances and min(distances) <= max_bits else None
        assert (found.distance if found else None) == expected
        if found is None:
            index.add(value, SIG, f"img{i}")
            kept.append(value)
    assert 0 < len(index) < 400


def test_index_requires_both_hash_and_colour_to_be_close() -> None:
    index = NearDuplicateIndex(4, max_colour_diff=10)
    grey = bytes([100] * 192)
    index.add(0b1011, grey, "kept")
    assert index.find(0b1010, bytes([105] * 192)).duplicate_of == "kept"
    assert index.find(0b1010, bytes([130] * 192)) is None
    assert index.find(0b1010 ^ (0xFF << 20), grey) is None


def test_deduplicator_keeps_the_first_and_reports_kind() -> None:
    dedupe = Deduplicator(exact=True, near=True, max_bits=2, max_colour_diff=8)
    sha_a, sha_b, sha_c = "aa" * 32, "bb" * 32, "cc" * 32
    assert dedupe.check("a", sha_a, 0xF0F0, SIG) is None
    exact = dedupe.check("a2", sha_a, 0x1234, SIG)
    assert (exact.duplicate_of, exact.kind, exact.distance) == ("a", "exact", 0)
    near = dedupe.check("b", sha_b, 0xF0F1, SIG)
    assert (near.duplicate_of, near.kind, near.distance) == ("a", "near", 1)
    assert dedupe.check("c", sha_c, 0x0F0F, SIG) is None
    only_exact = Deduplicator(exact=True, near=False, max_bits=2, max_colour_diff=8)
    assert only_exact.check("a", sha_a, 1, SIG) is None
    assert only_exact.check("b", sha_b, 1, SIG) is None
    assert only_exact.check("a2", sha_a, 99, SIG).kind == "exact"


def test_signature_must_have_the_documented_size() -> None:
    with pytest.raises(ValueError, match="192"):
        NearDuplicateIndex(2, 8).add(1, b"short", "x")
    assert len(colour_signature(noise_image(10, 7, 0))) == 192
    assert np.frombuffer(colour_signature(Image.new("RGB", (9, 9), (1, 2, 3))), np.uint8)[:3].tolist() == [1, 2, 3]
