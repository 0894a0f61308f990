"""Tests for GenEval-format image folders and `reca geneval-score`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from reca.cli import main as cli_main
from reca.evaluation.geneval import summarize
from reca.evaluation.geneval_folder import read_folder, score_folder, write_folder
from reca.evaluation.geneval_prompts import TASKS, colors_prompt
from reca.shapeworld.detector import PaletteColourClassifier, ShapeWorldDetector
from reca.shapeworld.world import PRESETS, render, sample_task_scene

WORLD = PRESETS["geneval"]


def _ground_truth_folder(root: Path, per_task: int = 3) -> list[dict]:
    rng = np.random.default_rng(4)
    prompts, images = [], []
    for task in TASKS:
        for _ in range(per_task):
            scene, metadata = sample_task_scene(rng, WORLD, task, bias=None)
            prompts.append(metadata)
            images.append([render(scene), render(scene)])
    write_folder(root, prompts, images)
    return prompts


def test_rendered_ground_truth_scores_perfectly_in_genevals_layout(tmp_path: Path) -> None:
    prompts = _ground_truth_folder(tmp_path)
    assert json.loads((tmp_path / "00000" / "metadata.jsonl").read_text()) == prompts[0]
    assert sorted(p.name for p in (tmp_path / "00000" / "samples").iterdir()) == ["00000.png", "00001.png"]
    rows, problems = score_folder(tmp_path, ShapeWorldDetector(WORLD.colours), PaletteColourClassifier(WORLD.colours))
    assert problems == [] and len(rows) == 2 * len(prompts)
    summary = summarize(rows)
    assert summary["overall"] == 1.0 and all(summary[t] == 1.0 for t in TASKS)


def test_swapped_images_fail_their_prompts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scene, _ = sample_task_scene(rng, WORLD, "colors", bias=None)
    colour = next(c for c in WORLD.colours if c != scene.objects[0].colour)
    write_folder(tmp_path, [colors_prompt(scene.objects[0].shape, colour)], [[render(scene)]])
    rows, _ = score_folder(tmp_path, ShapeWorldDetector(WORLD.colours), PaletteColourClassifier(WORLD.colours))
    assert not rows[0]["correct"] and f"expected {colour}" in rows[0]["reason"]


def test_bad_folders_and_images_are_reported_not_dropped(tmp_path: Path) -> None:
    _ground_truth_folder(tmp_path, per_task=1)
    (tmp_path / "00001" / "metadata.jsonl").write_text("{broken")
    (tmp_path / "00002" / "metadata.jsonl").unlink()
    (tmp_path / "00003" / "samples" / "00000.png").write_bytes(b"not a png")
    (tmp_path / "notes").mkdir()
    pairs, problems = read_folder(tmp_path)
    assert {Path(p["path"]).parent.name if p["path"].endswith(".jsonl") else Path(p["path"]).name
            for p in problems} == {"00001", "00002"}
    rows, problems = score_folder(tmp_path, ShapeWorldDetector(WORLD.colours), PaletteColourClassifier(WORLD.colours))
    assert len(rows) == len(pairs) - 1
    assert any("unreadable image" in p["reason"] and "00003" in p["path"] for p in problems)


def test_cli_scores_a_folder_made_elsewhere(tmp_path: Path, capsys) -> None:
    _ground_truth_folder(tmp_path / "images", per_task=1)
    out = tmp_path / "results.jsonl"
    params = tmp_path / "params.yaml"
    params.write_text("evaluate: {}\n")  # the defaults: the exact detector of the default world
    assert cli_main(["geneval-score", str(tmp_path / "images"), "--out", str(out), "--params", str(params),
                     "--summary", str(tmp_path / "summary.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["summary"]["overall"] == 1.0 and printed["problems"] == []
    assert len(out.read_text().splitlines()) == 2 * len(TASKS)
    assert json.loads((tmp_path / "summary.json").read_text())["summary"] == printed["summary"]
    assert cli_main(["geneval-score", str(tmp_path / "missing"), "--params", str(params)]) == 2
