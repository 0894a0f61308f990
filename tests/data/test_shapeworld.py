"""Tests for the synthetic ShapeWorld generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reca.data.shapeworld import (
    BACKGROUND,
    COLOURS,
    SHAPES,
    USUAL_COLOUR,
    Scene,
    SceneObject,
    eval_prompts,
    main,
    render,
    sample_scene,
    write_world,
)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write(root: Path, seed: int, **overrides: int) -> dict:
    kwargs = {"n_captioned": 12, "n_unlabeled": 6, "n_heldout": 4, "bias": 0.9}
    kwargs.update(overrides)
    return write_world(root, seed=seed, **kwargs)


def test_palette_constants() -> None:
    assert list(COLOURS) == ["red", "orange", "yellow", "green", "blue", "purple"]
    assert SHAPES == ("circle", "square", "triangle")
    assert USUAL_COLOUR == {"circle": "red", "square": "blue", "triangle": "yellow"}
    palette = np.array([BACKGROUND, *COLOURS.values()], dtype=float)
    dists = np.linalg.norm(palette[:, None] - palette[None], axis=-1)
    np.fill_diagonal(dists, np.inf)
    assert dists.min() > 80


def test_caption_names_left_object_first() -> None:
    right = SceneObject("square", "blue", cx=24.0, cy=16.0, size=10)
    left = SceneObject("circle", "red", cx=8.0, cy=16.0, size=10)
    assert Scene((right, left)).caption() == "a red circle left of a blue square"
    assert Scene((left,)).caption() == "a red circle"


def test_scene_round_trips_through_dict() -> None:
    scene = sample_scene(np.random.default_rng(0), n_objects=2, bias=0.9)
    assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


def test_render_uses_only_palette_colours_and_exact_box() -> None:
    obj = SceneObject("square", "green", cx=10.0, cy=12.5, size=11)
    pixels = np.asarray(render(Scene((obj,))))
    assert pixels.shape == (32, 32, 3)
    is_green = np.all(pixels == COLOURS["green"], axis=-1)
    ys, xs = np.nonzero(is_green)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == obj.bbox == (5, 7, 16, 18)
    assert np.all(pixels[~is_green] == BACKGROUND)


def test_triangle_points_up() -> None:
    obj = SceneObject("triangle", "yellow", cx=16.0, cy=16.0, size=12)
    mask = np.all(np.asarray(render(Scene((obj,)))) == COLOURS["yellow"], axis=-1)
    x0, y0, x1, y1 = obj.bbox
    assert mask[y1 - 1, x0:x1].all()
    assert mask[y0].sum() <= 2


@pytest.mark.parametrize(("bias", "low", "high"), [(0.9, 0.85, 0.95), (None, 0.12, 0.22)])
def test_colour_bias_rate(bias: float | None, low: float, high: float) -> None:
    rng = np.random.default_rng(123)
    objects = []
    while len(objects) < 2000:
        objects.extend(sample_scene(rng, n_objects=int(rng.integers(1, 3)), bias=bias).objects)
    rate = np.mean([USUAL_COLOUR[o.shape] == o.colour for o in objects[:2000]])
    assert low <= rate <= high


def test_two_object_scenes_are_disjoint_ordered_and_distinct() -> None:
    rng = np.random.default_rng(7)
    for _ in range(500):
        scene = sample_scene(rng, n_objects=2, bias=0.9)
        left, right = scene.objects
        lx0, ly0, lx1, ly1 = left.bbox
        rx0, ry0, rx1, ry1 = right.bbox
        assert lx0 >= 0
        assert lx1 <= 16
        assert rx0 >= 16
        assert rx1 <= 32
        assert min(ly0, ry0) >= 0
        assert max(ly1, ry1) <= 32
        assert lx1 < rx0, "a gap must keep same-coloured objects apart"
        assert left.cx < right.cx
        assert (left.shape, left.colour) != (right.shape, right.colour)
        assert 10 <= left.size <= 13
        assert 10 <= right.size <= 13


def test_write_world_is_deterministic(tmp_path: Path) -> None:
    _write(tmp_path / "a", seed=5)
    _write(tmp_path / "b", seed=5)
    _write(tmp_path / "c", seed=6)
    a, b, c = (_tree_bytes(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert a != c
    pngs = [name for name in a if name.endswith(".png")]
    assert any(a[name] != c[name] for name in pngs)


def test_write_world_layout_and_ground_truth(tmp_path: Path) -> None:
    summary = _write(tmp_path, seed=1)
    assert summary["counts"] == {"captioned": 12, "unlabeled": 6, "heldout": 4}
    for split, count in summary["counts"].items():
        assert sorted(p.name for p in (tmp_path / split).glob("*.png")) == [
            f"{i:05d}.png" for i in range(count)
        ]
    captions = [json.loads(line) for line in (tmp_path / "captioned/captions.jsonl").read_text().splitlines()]
    truth = [json.loads(line) for line in (tmp_path / "ground_truth.jsonl").read_text().splitlines()]
    assert len(truth) == 22
    by_file = {rec["file"]: Scene.from_dict(rec["scene"]) for rec in truth}
    for rec in captions:
        assert by_file[f"captioned/{rec['file']}"].caption() == rec["caption"]
    for name, scene in by_file.items():
        stored = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert np.array_equal(stored, np.asarray(render(scene)))


def test_split_streams_are_independent(tmp_path: Path) -> None:
    _write(tmp_path / "a", seed=3)
    _write(tmp_path / "b", seed=3, n_captioned=20)
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    for name in a:
        if name.startswith(("unlabeled/", "heldout/")):
            assert a[name] == b[name]


def test_rewrite_removes_stale_images(tmp_path: Path) -> None:
    _write(tmp_path, seed=0, n_unlabeled=6)
    _write(tmp_path, seed=0, n_unlabeled=2)
    assert sorted(p.name for p in (tmp_path / "unlabeled").glob("*.png")) == ["00000.png", "00001.png"]


def test_eval_prompts_cover_all_pairs_and_are_deterministic() -> None:
    prompts = eval_prompts(seed=0, n_single=18, n_two=10)
    assert prompts == eval_prompts(seed=0, n_single=18, n_two=10)
    assert prompts != eval_prompts(seed=1, n_single=18, n_two=10)
    singles, twos = prompts[:18], prompts[18:]
    pairs = {(p["objects"][0]["shape"], p["objects"][0]["colour"]) for p in singles}
    assert len(pairs) == 18
    assert all(p["relation"] is None for p in singles)
    assert sum(p["usual"] for p in singles) == 3
    assert (
        prompts[0]["prompt"] == f"a {prompts[0]['objects'][0]['colour']} {prompts[0]['objects'][0]['shape']}"
    )
    for p in twos:
        first, second = p["objects"]
        assert p["relation"] == "left_of"
        assert first != second
        assert (
            p["prompt"]
            == f"a {first['colour']} {first['shape']} left of a {second['colour']} {second['shape']}"
        )
    # More two-object prompts must not change the single-object ones.
    assert eval_prompts(seed=0, n_single=18, n_two=30)[:18] == singles


def test_main_writes_world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--out", str(tmp_path), "--seed", "0", "--captioned", "3", "--unlabeled", "2", "--heldout", "1"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"captioned": 3, "unlabeled": 2, "heldout": 1}
    assert (tmp_path / "ground_truth.jsonl").exists()
