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
    # each difference carries its 95% interval (paired bootstrap over prompts), in metrics and in the table
    for key, value in metrics["delta"].items():
        if key in metrics["delta_95_low"]:
            assert metrics["delta_95_low"][key] <= value + 1e-9 <= metrics["delta_95_high"][key] + 2e-9
    assert "overall" in metrics["delta_95_low"]
    assert "95% interval of Δ" in (out / "report" / "comparison.md").read_text()
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


def test_each_batch_is_the_same_whichever_rank_draws_it(setup: dict) -> None:
    import torch

    from reca.data.dataset import ImageTable
    from reca.distributed import Workers
    from reca.models.loading import load_model_dir

    adapter = load_model_dir(setup["root"] / "a", ModelParams()).eval()
    params = _params(batch_size=4, n_reconstruction=5)  # two batches of each kind, one per rank
    prompts = evaluate.build_prompts(params)
    heldout = ImageTable.from_manifest(setup["degraded"], "heldout")
    settings = json.loads((setup["degraded"] / "degrade.json").read_text())
    halves = [Workers(rank, 2) for rank in (0, 1)]
    with torch.no_grad():
        whole = evaluate.generate_images(adapter, prompts, params)
        split = [evaluate.generate_images(adapter, prompts, params, w) for w in halves]
        recon_whole = evaluate.reconstruction_batches(adapter, heldout, params, settings)
        recon_split = [evaluate.reconstruction_batches(adapter, heldout, params, settings, w) for w in halves]
    n_batches = len(evaluate.t2i_batches(prompts, params))
    assert sorted(split[0]) == list(range(0, n_batches, 2)) and sorted(split[1]) == list(range(1, n_batches, 2))
    assert {b: [im.tobytes() for im in v] for b, v in whole.items()} == {
        b: [im.tobytes() for im in v] for part in split for b, v in part.items()}
    assert sorted(recon_split[0]) == [0] and sorted(recon_split[1]) == [1]  # batches of 4 and 1
    merged = {**recon_split[0], **recon_split[1]}
    assert evaluate.fidelity_scores([merged[b] for b in sorted(merged)])[0] == evaluate.fidelity_scores(
        [recon_whole[b] for b in sorted(recon_whole)])[0]


@pytest.mark.slow
def test_two_processes_give_the_one_process_rows_images_and_metrics(setup: dict, tmp_path: Path) -> None:
    import sys

    import yaml

    from reca_fixtures.tools import run_tool
    from reca_fixtures.tracking import fresh_mlflow_store

    root, one, two = setup["root"], tmp_path / "one", tmp_path / "two"
    params = _params(batch_size=3, samples_per_prompt=2, n_reconstruction=5)
    models = {"sft": root / "a", "reca": root / "b"}
    evaluate.run(params, ModelParams(), setup["degraded"], models, one / "metrics.json", one / "report",
                 FakeTracker())
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"model": {"adapter": "janus_ar"},
                                           "evaluate": {**params.model_dump(), "processes": 2}}))
    fresh_mlflow_store(tmp_path)
    out = run_tool([Path(sys.executable).parent / "reca", "evaluate", "--params", params_file,
                    "--degraded", setup["degraded"], *(f"--model={n}={d}" for n, d in models.items()),
                    "--metrics", two / "metrics.json", "--plot-data", two / "per_task.json",
                    "--chart", two / "per_task.png", "--report-dir", two / "report"], tmp_path, timeout=300)
    assert "--nproc_per_node=2" in out.stderr
    assert (two / "metrics.json").read_text() == (one / "metrics.json").read_text()
    assert (two / "per_task.json").read_text() == (one / "per_task.json").read_text()
    for name in models:
        rows = [(r / name / "results.jsonl").read_text().replace(str(r), "<report>") for r in (one / "report",
                                                                                            two / "report")]
        assert rows[0] == rows[1] and rows[0].count("\n") == 2 * len(evaluate.build_prompts(params))
        pngs = [sorted((r / name / "geneval").rglob("*.png")) for r in (one / "report", two / "report")]
        assert [p.relative_to(one / "report") for p in pngs[0]] == [p.relative_to(two / "report") for p in pngs[1]]
        assert [p.read_bytes() for p in pngs[0]] == [p.read_bytes() for p in pngs[1]]
    for produced in ("comparison.md", "evaluation_metadata.jsonl"):
        assert (two / "report" / produced).read_text() == (one / "report" / produced).read_text()
    for grid in ("samples.png", "prompts.png", "reconstructions.png"):
        assert (two / "report" / grid).read_bytes() == (one / "report" / grid).read_bytes()
