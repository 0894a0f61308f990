"""Tests for the synthetic ShapeWorld generator (world recipes, rendering, writing)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reca.evaluation.geneval import score_image
from reca.evaluation.geneval_prompts import GENEVAL_COLOURS, TASKS
from reca.shapeworld.detector import PaletteColourClassifier, ShapeWorldDetector, detect
from reca.shapeworld.world import (
    BACKGROUND,
    COLOURS,
    PALETTE,
    PRESETS,
    SHAPES,
    USUAL_COLOUR,
    Scene,
    SceneObject,
    WorldSpec,
    render,
    sample_scene,
    sample_task_scene,
    sample_world_scene,
    shape_mask,
)
from reca.shapeworld.writer import main, write_world

GENEVAL = PRESETS["geneval"]
LEGACY = PRESETS["legacy"]


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write(root: Path, seed: int, spec: WorldSpec = GENEVAL, **overrides: int) -> dict:
    kwargs = {"n_captioned": 12, "n_unlabeled": 6, "n_heldout": 4, "bias": 0.9}
    kwargs.update(overrides)
    return write_world(root, seed=seed, spec=spec, **kwargs)


def test_palette_is_geneval_colours_far_apart() -> None:
    assert set(PALETTE) == set(GENEVAL_COLOURS)
    assert list(COLOURS) == ["red", "orange", "yellow", "green", "blue", "purple"]
    palette = np.array([BACKGROUND, *PALETTE.values()], dtype=float)
    dists = np.linalg.norm(palette[:, None] - palette[None], axis=-1)
    np.fill_diagonal(dists, np.inf)
    assert dists.min() > 90


def test_default_world_has_five_shapes_six_colours_and_a_usual_colour_each() -> None:
    assert len(GENEVAL.shapes) >= 5 and set(GENEVAL.shapes) == set(SHAPES)
    assert len(GENEVAL.colours) >= 6 and set(GENEVAL.colours) <= set(GENEVAL_COLOURS)
    assert set(GENEVAL.usual_colour) == set(GENEVAL.shapes)
    assert LEGACY.shapes == ("circle", "square", "triangle")


def test_legacy_preset_is_byte_identical_to_the_previous_generator(tmp_path: Path) -> None:
    # The digest of the previous generator's output for these arguments (measured before the
    # world recipes were added): the legacy world must never drift.
    write_world(tmp_path, seed=3, n_captioned=12, n_unlabeled=6, n_heldout=4, bias=0.9, spec=LEGACY)
    digest = hashlib.sha256()
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(tmp_path)).encode())
            digest.update(path.read_bytes())
    assert digest.hexdigest() == "47d6950616da9cf9c7f6eeceae44f703c32e09f1d3108cbfc543485533300235"


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_fills_its_box_symmetrically(shape: str) -> None:
    for size in range(8, 15):
        mask = shape_mask(shape, size)
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == (0, 0, size - 1, size - 1)
        assert np.array_equal(mask, mask[:, ::-1]), f"{shape} {size} is not mirror-symmetric"


def test_shapes_are_pairwise_different() -> None:
    # Small shapes are blocky (a 10-pixel circle is nearly a rounded square): the detector
    # needs each shape's own template to beat every other clearly, not a wide margin.
    for size in range(10, 15):
        masks = {s: shape_mask(s, size) for s in SHAPES}
        for a in SHAPES:
            for b in SHAPES:
                if a < b:
                    inter = np.count_nonzero(masks[a] & masks[b])
                    union = np.count_nonzero(masks[a] | masks[b])
                    assert inter / union < 0.9, (a, b, size)


def test_render_uses_only_palette_colours_and_exact_box() -> None:
    obj = SceneObject("square", "green", cx=10.0, cy=12.5, size=11)
    pixels = np.asarray(render(Scene((obj,))))
    is_green = np.all(pixels == COLOURS["green"], axis=-1)
    ys, xs = np.nonzero(is_green)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == obj.bbox == (5, 7, 16, 18)
    assert np.all(pixels[~is_green] == BACKGROUND)


def test_legacy_caption_names_left_object_first() -> None:
    right = SceneObject("square", "blue", cx=24.0, cy=16.0, size=10)
    left = SceneObject("circle", "red", cx=8.0, cy=16.0, size=10)
    assert Scene((right, left)).caption() == "a red circle left of a blue square"


def test_scene_round_trips_through_dict() -> None:
    scene, _ = sample_world_scene(np.random.default_rng(0), GENEVAL, 0.9)
    assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


@pytest.mark.parametrize("task", TASKS)
def test_every_caption_is_true_of_its_image_by_genevals_own_rules(task: str) -> None:
    rng = np.random.default_rng(11)
    detector = ShapeWorldDetector(GENEVAL.colours, GENEVAL.shapes)
    colours = PaletteColourClassifier(GENEVAL.colours)
    for _ in range(40):
        scene, metadata = sample_task_scene(rng, GENEVAL, task, bias=0.5)
        image = render(scene)
        row = score_image(image, detector.detect([image])[0], metadata, colours)
        assert row["correct"], (metadata, row["reason"])


def test_scenes_hold_one_to_four_disjoint_objects_with_a_gap() -> None:
    rng = np.random.default_rng(7)
    counts = Counter()
    for _ in range(600):
        scene, metadata = sample_world_scene(rng, GENEVAL, None)
        counts[len(scene.objects)] += 1
        boxes = [o.bbox for o in scene.objects]
        for x0, y0, x1, y1 in boxes:
            assert x0 >= 0 and y0 >= 0 and x1 <= 32 and y1 <= 32
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                gap_x = max(b[0] - a[2], a[0] - b[2])
                gap_y = max(b[1] - a[3], a[1] - b[3])
                assert max(gap_x, gap_y) >= 2, "objects must not touch"
        assert metadata["tag"] in TASKS
    assert set(counts) == {1, 2, 3, 4}


@pytest.mark.parametrize(("bias", "low", "high"), [(0.9, 0.87, 0.93), (None, 0.13, 0.21)])
def test_colour_bias_rate(bias: float | None, low: float, high: float) -> None:
    rng = np.random.default_rng(123)
    objects = []
    while len(objects) < 3000:
        objects.extend(sample_world_scene(rng, GENEVAL, bias)[0].objects)
    rate = np.mean([USUAL_COLOUR[o.shape] == o.colour for o in objects[:3000]])
    assert low <= rate <= high


def test_world_spec_rejects_what_cannot_be_drawn() -> None:
    with pytest.raises(ValueError, match="shapes"):
        WorldSpec(shapes=("circle", "hexagon"))
    with pytest.raises(ValueError, match="GenEval"):
        WorldSpec(colours=("red", "teal"))
    with pytest.raises(ValueError, match="grid cell"):
        WorldSpec(max_size=16)
    with pytest.raises(ValueError, match="max_count"):
        WorldSpec(max_count=5)


def test_write_world_is_deterministic_and_seeded(tmp_path: Path) -> None:
    _write(tmp_path / "a", seed=5)
    _write(tmp_path / "b", seed=5)
    _write(tmp_path / "c", seed=6)
    a, b, c = (_tree_bytes(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_write_world_layout_captions_and_ground_truth(tmp_path: Path) -> None:
    summary = _write(tmp_path, seed=1)
    assert summary["counts"] == {"captioned": 12, "unlabeled": 6, "heldout": 4}
    for split, count in summary["counts"].items():
        assert sorted(p.name for p in (tmp_path / split).glob("*.png")) == [f"{i:05d}.png" for i in range(count)]
    assert not (tmp_path / "unlabeled" / "captions.jsonl").exists()
    captions = [json.loads(line) for line in (tmp_path / "captioned/captions.jsonl").read_text().splitlines()]
    truth = [json.loads(line) for line in (tmp_path / "ground_truth.jsonl").read_text().splitlines()]
    assert len(truth) == 22
    by_file = {rec["file"]: rec for rec in truth}
    for rec in captions:
        gt = by_file[f"captioned/{rec['file']}"]
        assert gt["metadata"]["prompt"] == rec["caption"] and rec["caption"].startswith("a photo of ")
    for name, rec in by_file.items():
        assert rec["task"] in TASKS
        assert ("metadata" in rec) == name.startswith("captioned/")
        stored = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert np.array_equal(stored, np.asarray(render(Scene.from_dict(rec["scene"]))))


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


def test_legacy_world_keeps_one_or_two_objects_left_to_right() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        scene = sample_scene(rng, n_objects=2, bias=0.9)
        left, right = scene.objects
        assert left.bbox[2] < right.bbox[0] <= 32 and left.bbox[2] <= 16
        assert (left.shape, left.colour) != (right.shape, right.colour)


def test_main_writes_world_with_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--out", str(tmp_path), "--captioned", "3", "--unlabeled", "2", "--heldout", "1",
            "--shapes", "circle,cross", "--colours", "red,pink,white"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"captioned": 3, "unlabeled": 2, "heldout": 1}
    assert summary["world"]["shapes"] == ["circle", "cross"]
    assert summary["world"]["usual"] == {"circle": "red"}
    scenes = [json.loads(line)["scene"] for line in (tmp_path / "ground_truth.jsonl").read_text().splitlines()]
    assert {o["shape"] for s in scenes for o in s["objects"]} <= {"circle", "cross"}
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--colours", "red,teal"])


def test_task_weights_decide_how_many_captions_name_a_colour(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    def colour_named(weights: list[str]) -> tuple[float, dict[str, float]]:
        out = tmp_path / "-".join(weights or ["default"])
        assert main(["--out", str(out), "--captioned", "120", "--unlabeled", "1", "--heldout", "1", *weights]) == 0
        summary = json.loads(capsys.readouterr().out)
        rows = [json.loads(line) for line in (out / "captioned" / "captions.jsonl").read_text().splitlines()]
        named = sum(any(c in r["caption"].split() for c in GENEVAL_COLOURS) for r in rows) / len(rows)
        return named, summary["world"]["task_weights"]

    default, weights = colour_named([])
    assert 0.2 < default < 0.5 and set(weights.values()) == {1.0}
    heavy, weights = colour_named(["--task-weights", "colors=5,color_attr=5"])
    assert heavy > 0.6 and weights["colors"] == 5.0 and weights["counting"] == 1.0
    only, _ = colour_named(["--task-weights", "single_object=0,two_object=0,counting=0,position=0"])
    assert only == 1.0
    for bad in ("colors", "colors=many", "sorting=1"):
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path / "bad"), "--task-weights", bad])


def test_exact_detector_reads_the_rendered_default_world() -> None:
    rng = np.random.default_rng(3)
    spec = dataclasses.replace(GENEVAL, min_size=10, max_size=14)
    scene, _ = sample_task_scene(rng, spec, "counting", bias=None)
    found = detect(render(scene))
    assert Counter(d.shape for d in found) == Counter(o.shape for o in scene.objects)
