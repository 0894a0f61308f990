"""Tests for the `evaluate` stage: models side by side on the same prompts and seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reca.data.transforms import to_pil
from reca.fileio import write_json, write_jsonl
from reca.params import EvaluateParams, ModelParams
from reca.stages import evaluate
from reca_fixtures.models import build_tiny_adapter, tiny_pixels
from reca_fixtures.tracking import FakeTracker


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("evaluate")
    degraded = root / "degraded"
    rows = []
    for i, pixels in enumerate(tiny_pixels(6, size=16, seed=3)):
        for kind in ("understanding", "generation"):
            path = degraded / kind / f"h{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            to_pil(pixels).save(path)
        rows.append({"id": f"h{i}", "split": "heldout", "understanding": f"understanding/h{i}.png",
                     "generation": f"generation/h{i}.png"})
    write_jsonl(degraded / "manifest.jsonl", rows)
    write_json(degraded / "degrade.json", {"understanding_size": 16, "resize_mode": "center_crop",
                                           "blur_sigma": 0.0, "downup_factor": 0.5})
    adapter = build_tiny_adapter(seed=0)
    adapter.save_pretrained(root / "a")
    adapter.save_pretrained(root / "a_again")
    build_tiny_adapter(seed=1).save_pretrained(root / "b")
    return {"root": root, "degraded": degraded}


def _params(**overrides) -> EvaluateParams:
    base = {"prompts_per_task": 1, "samples_per_prompt": 1, "n_reconstruction": 2, "batch_size": 16, "grid_size": 4,
            "classes": ["circle", "square"], "usual_colours": {"circle": "red"}}
    return EvaluateParams(**{**base, **overrides})


def test_models_side_by_side_on_the_same_prompts_and_noise(setup: dict) -> None:
    root, tracker = setup["root"], FakeTracker()
    out = root / "run"
    models = {"sft": root / "a", "sft_again": root / "a_again", "other": root / "b"}
    metrics = evaluate.run(_params(), ModelParams(), setup["degraded"], models, out / "metrics.json",
                           out / "report", tracker)
    tasks = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
    for name in models:
        assert set(tasks) <= set(metrics[name])
        assert {"overall", "recon_psnr", "recon_ssim", "recon_hv_cosine", "colors_unusual"} <= set(metrics[name])
        assert -1.0 - 1e-6 <= metrics[name]["recon_hv_cosine"] <= 1.0 + 1e-6
    assert "delta" not in metrics  # only for exactly two models
    # Same weights, same prompts, same noise: the same images and every number agrees.
    assert metrics["sft"] == metrics["sft_again"]
    report = out / "report"
    prompts = [json.loads(line) for line in (report / "evaluation_metadata.jsonl").read_text().splitlines()]
    images = {name: sorted((report / name / "geneval").rglob("*.png")) for name in models}
    assert len(images["sft"]) == len(prompts)
    assert [p.read_bytes() for p in images["sft"]] == [p.read_bytes() for p in images["sft_again"]]
    assert any(x.read_bytes() != y.read_bytes() for x, y in zip(images["sft"], images["other"], strict=True))
    for name in models:
        assert len((report / name / "results.jsonl").read_text().splitlines()) == len(prompts)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    for produced in ("comparison.md", "samples.png", "prompts.png", "reconstructions.png"):
        assert (report / produced).stat().st_size > 0
    assert "| metric | sft | sft_again | other |" in (report / "comparison.md").read_text()
    assert (out / "per_task.png").stat().st_size > 0
    assert {r["model"] for r in json.loads((out / "per_task.json").read_text())} == set(models)
    assert "sft.overall" in tracker.metrics and "other.recon_psnr" in tracker.metrics
    assert {"metrics.json", "per_task.json", "per_task.png", "report"} <= set(tracker.artifacts)


def test_two_models_get_a_delta(setup: dict) -> None:
    root = setup["root"]
    out = root / "run2"
    params = _params(prompts_per_task=0, n_reconstruction=0)
    metrics = evaluate.run(params, ModelParams(), setup["degraded"], {"sft": root / "a", "reca": root / "b"},
                           out / "metrics.json", out / "report", FakeTracker())
    assert metrics["delta"]["overall"] == pytest.approx(metrics["reca"]["overall"] - metrics["sft"]["overall"])
    assert "single_object_images" not in metrics["delta"]
    assert not (out / "report" / "reconstructions.png").exists()


def test_official_metadata_file_replaces_the_recipe(setup: dict, tmp_path: Path) -> None:
    metadata = tmp_path / "evaluation_metadata.jsonl"
    metadata.write_text(json.dumps({"tag": "single_object", "include": [{"class": "circle", "count": 1}],
                                    "prompt": "a photo of a circle"}) + "\n")
    assert evaluate.build_prompts(_params(metadata_file=str(metadata))) == [
        {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}]
    with pytest.raises(ValueError, match="detector_path"):
        EvaluateParams(detector="mask2former")
    with pytest.raises(ValueError, match="not GenEval colours"):
        EvaluateParams(colours=["red", "teal"])
