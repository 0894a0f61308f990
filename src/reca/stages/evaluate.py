"""`evaluate`: the SFT model and the RecA model side by side, on the same prompts and seeds.

* Compositional text-to-image score on held-out prompts of the default world,
  read by the exact detector (:mod:`reca.evaluation.shapeworld_detector`).
* Reconstruction fidelity: images generated from ``h_v`` of held-out images
  (plus a reconstruction template) against the originals, PSNR and SSIM.

Outputs: ``metrics.json`` (DVC metrics), per-prompt ``records.jsonl`` and
sample grids, all logged to MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from reca.data.dataset import ImageTable
from reca.data.shapeworld import eval_prompts
from reca.data.transforms import to_pil
from reca.evaluation.compositional import aggregate, score_image
from reca.evaluation.fidelity import psnr, ssim
from reca.evaluation.grids import save_grid
from reca.evaluation.shapeworld_detector import detect
from reca.fileio import write_json, write_jsonl
from reca.models.base import Condition, UMMAdapter
from reca.objectives.templates import RECONSTRUCTION_TEMPLATES
from reca.params import EvaluateParams, ModelParams, flatten
from reca.stages.model_loading import load_model_dir
from reca.tracking.mlflow_run import StageRun

#: the fixed instruction for reconstruction at evaluation (training draws from the whole bank)
EVAL_TEMPLATE = RECONSTRUCTION_TEMPLATES[0]


def _generator(seed: int, batch: int) -> torch.Generator:
    # One generator per (seed, batch index): both models sample with the same noise stream.
    return torch.Generator().manual_seed(seed * 100_003 + batch)


def text_to_image_scores(adapter: UMMAdapter, prompts: list[dict[str, Any]], params: EvaluateParams
                         ) -> tuple[dict[str, float], list[dict[str, Any]], list[Any]]:
    """Generate every prompt ``samples_per_prompt`` times, detect, score; return (metrics, records, images)."""
    jobs = [(p, s) for p in prompts for s in range(params.samples_per_prompt)]
    records, images = [], []
    for b, start in enumerate(tqdm(range(0, len(jobs), params.batch_size), desc=f"t2i {adapter.name}",
                                   unit="batch")):
        chunk = jobs[start : start + params.batch_size]
        out = adapter.generate(Condition(texts=[p["prompt"] for p, _ in chunk]),
                               guidance_scale=params.guidance_scale, temperature=params.temperature,
                               generator=_generator(params.seed, b))
        for (prompt, sample), pixels in zip(chunk, out, strict=True):
            image = to_pil(pixels)
            found = detect(image)
            records.append({"prompt": prompt, "sample": sample, "scores": score_image(prompt, found),
                            "detections": [f"{d.colour} {d.shape}" for d in found]})
            images.append(image)
    return aggregate(records), records, images


def reconstruction_scores(adapter: UMMAdapter, heldout: ImageTable, params: EvaluateParams
                          ) -> tuple[dict[str, float], list[Any], list[Any]]:
    """PSNR/SSIM of images generated from ``h_v`` of held-out images; return (metrics, inputs, outputs)."""
    n = min(params.n_reconstruction, len(heldout))
    psnrs, ssims, inputs, outputs = [], [], [], []
    for b, start in enumerate(range(0, n, params.batch_size)):
        idx = list(range(start, min(start + params.batch_size, n)))
        h_v = adapter.embed_images(heldout.pixels(idx, "understanding"))
        target = heldout.pixels(idx, "generation")
        out = adapter.generate(Condition(texts=[EVAL_TEMPLATE] * len(idx), image_embeddings=h_v),
                               guidance_scale=params.guidance_scale, temperature=params.temperature,
                               generator=_generator(params.seed + 1, b))
        psnrs.append(psnr(out, target))
        ssims.append(ssim(out, target))
        inputs += [to_pil(t) for t in target]
        outputs += [to_pil(o) for o in out]
    if not psnrs:
        return {}, [], []
    return ({"recon_psnr": torch.cat(psnrs).mean().item(), "recon_ssim": torch.cat(ssims).mean().item()},
            inputs, outputs)


def run(params: EvaluateParams, model: ModelParams, degraded_dir: str | Path, models: dict[str, str | Path],
        metrics_path: str | Path, report_dir: str | Path, tracker: StageRun) -> dict[str, Any]:
    """Score every model in ``models`` (name -> directory) on identical prompts and seeds."""
    tracker.log_params(flatten(params, "evaluate"))
    prompts = eval_prompts(seed=params.seed, n_single=params.n_single, n_two=params.n_two)
    heldout = ImageTable.from_manifest(degraded_dir, "heldout")
    report_dir = Path(report_dir)
    metrics: dict[str, Any] = {}
    t2i_images: dict[str, list[Any]] = {}
    recon: dict[str, list[Any]] = {}
    for name, directory in models.items():
        adapter = load_model_dir(directory, model).eval()
        with torch.no_grad():
            scores, records, images = text_to_image_scores(adapter, prompts, params)
            fidelity, recon_in, recon_out = reconstruction_scores(adapter, heldout, params)
        metrics[name] = {**scores, **fidelity}
        t2i_images[name] = images
        recon[name] = recon_out
        recon["input"] = recon_in
        write_jsonl(report_dir / f"records_{name}.jsonl", records)
        tracker.log_metrics({f"{name}.{k}": v for k, v in metrics[name].items()})
    names = list(models)
    if len(names) == 2:
        a, b = names
        metrics["delta"] = {k: metrics[b][k] - metrics[a][k] for k in metrics[a] if k in metrics[b]}
    write_json(metrics_path, metrics)
    k = min(params.grid_size, len(prompts))
    save_grid(report_dir / "samples.png",
              [(f"{n}", t2i_images[n][:k]) for n in names], label_width=60)
    save_grid(report_dir / "prompts.png",
              [(p["prompt"], [t2i_images[n][i * params.samples_per_prompt] for n in names])
               for i, p in enumerate(prompts[:k])])
    if recon.get("input"):
        m = min(params.grid_size, len(recon["input"]))
        save_grid(report_dir / "reconstructions.png",
                  [("input", recon["input"][:m]), *[(n, recon[n][:m]) for n in names]], label_width=60)
    tracker.log_artifact(metrics_path)
    tracker.log_artifact(report_dir, artifact_path="report")
    return metrics
