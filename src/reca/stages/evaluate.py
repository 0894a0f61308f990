"""`evaluate`: several models (SFT, RecA, ...) side by side on the same prompts and seeds.

* GenEval: prompts by GenEval's recipe over ``evaluate.classes`` /
  ``evaluate.colours`` (or a GenEval metadata file such as the official 553
  prompts), ``samples_per_prompt`` images per prompt per model with the same
  noise for every model, written in GenEval's folder layout and scored with
  GenEval's rules (:mod:`reca.evaluation.geneval`) by the configured detector
  and colour classifier. Colour tasks are also split into usual and unusual
  colour pairs, where the captioned split's bias shows.
* Reconstruction fidelity: held-out images regenerated from their own ``h_v``
  (plus a fixed reconstruction template); PSNR, SSIM, and the cosine between
  ``h_v`` of the input and ``h_v`` of the reconstruction (the reconstruction
  degraded exactly as `degrade` made the input).

Everything goes through the adapter protocol (``generate``, ``embed_images``),
so it works for every registered adapter.

The model, detector and colour classifier run on the process's accelerator.
With ``evaluate.processes`` > 1 (``reca evaluate`` relaunches itself as
`train` does) each process generates, scores and reconstructs whole batches,
dealt out round-robin; a batch's noise is seeded by its index, never by the
rank, and batches keep the composition one process gives them, so rank 0
merges exactly the images, rows and metrics of one process, and writes every
output.

Outputs: ``metrics.json`` (DVC metrics), the per-task bar chart PNG and its
data table (DVC plots), and in the report directory the comparison table
(``comparison.md``), sample grids, the prompts used, each model's GenEval
folder and result rows; all logged to MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from reca.data.dataset import ImageTable
from reca.data.transforms import degrade, resize, to_pil, to_tensor
from reca.distributed import Workers, join_workers
from reca.evaluation.bootstrap import difference_intervals
from reca.evaluation.colour_classifier import ClipColourClassifier
from reca.evaluation.comparison_report import bar_chart, markdown_table, plot_rows
from reca.evaluation.detectors import Mask2FormerDetector
from reca.evaluation.fidelity import embedding_cosine, psnr, ssim
from reca.evaluation.geneval import ColourClassifier, Detector, GenEvalRules, summarize
from reca.evaluation.geneval_folder import sample_path, score_images, write_folder
from reca.evaluation.geneval_prompts import (
    create_prompts,
    load_metadata,
    metadata_key,
    usual_colour_split,
    write_metadata,
)
from reca.evaluation.grids import save_grid
from reca.fileio import atomic_path, read_json, write_json, write_jsonl
from reca.models.base import Condition, UMMAdapter
from reca.models.loading import load_model_dir
from reca.objectives.templates import RECONSTRUCTION_TEMPLATES
from reca.params import EvaluateParams, ModelParams, flatten
from reca.shapeworld.detector import PaletteColourClassifier, ShapeWorldDetector
from reca.stage_files import DEGRADE_RECORD
from reca.tracking.mlflow_run import StageRun
from reca.training.registration import tag_version_with_metrics

#: the fixed instruction for reconstruction at evaluation (training draws from the whole bank)
EVAL_TEMPLATE = RECONSTRUCTION_TEMPLATES[0]
#: detectors ``evaluate.detector`` names: the default world's exact one, or a Mask2Former checkpoint
DETECTORS = ("shapeworld", "mask2former")
#: colour classifiers ``evaluate.colour_classifier`` names: the world's palette, or GenEval's CLIP rule
COLOUR_CLASSIFIERS = ("palette", "clip")


def _generator(seed: int, batch: int, device: torch.device | str = "cpu") -> torch.Generator:
    # One generator per (seed, batch index): every model, on whichever rank draws the batch, samples with
    # the same noise stream (on the model's device: CUDA noise differs from CPU noise, but not between ranks).
    return torch.Generator(device=device).manual_seed(seed * 100_003 + batch)


def build_prompts(params: EvaluateParams) -> list[dict[str, Any]]:
    """The GenEval metadata to evaluate: ``metadata_file`` if set, else GenEval's recipe over the vocabulary."""
    if params.metadata_file:
        return load_metadata(params.metadata_file)
    return create_prompts(params.classes, colours=params.colours, seed=params.prompt_seed,
                          n_per_task=params.prompts_per_task, max_count=params.max_count)


def rules_of(params: EvaluateParams) -> GenEvalRules:
    """GenEval's options from the ``evaluate`` section."""
    return GenEvalRules(threshold=params.threshold, counting_threshold=params.counting_threshold,
                        max_objects=params.max_objects, max_overlap=params.max_overlap,
                        position_threshold=params.position_threshold)


def build_detector(name: str, *, colours: Sequence[str], classes: Sequence[str], path: str | None = None,
                   revision: str | None = None, trust_remote_code: bool = False,
                   device: torch.device | str = "cpu") -> Detector:
    """The detector called ``name`` (one of :data:`DETECTORS`): the world's exact one, or Mask2Former."""
    if name == "shapeworld":
        return ShapeWorldDetector(colours, classes)
    if name == "mask2former":
        if not path:
            raise ValueError("the mask2former detector needs evaluate.detector_path (a local dir or hub id)")
        return Mask2FormerDetector.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code,
                                                   device=device)
    raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")


def build_colour_classifier(name: str, *, colours: Sequence[str], path: str | None = None,
                            revision: str | None = None, trust_remote_code: bool = False,
                            device: torch.device | str = "cpu") -> ColourClassifier:
    """The colour classifier called ``name`` (one of :data:`COLOUR_CLASSIFIERS`): the world's palette, or CLIP."""
    if name == "palette":
        return PaletteColourClassifier(colours)
    if name == "clip":
        if not path:
            raise ValueError("the clip colour classifier needs evaluate.clip_path (a local dir or hub id)")
        return ClipColourClassifier.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code,
                                                    device=device)
    raise ValueError(f"unknown colour classifier {name!r}; known: {', '.join(COLOUR_CLASSIFIERS)}")


def build_scorer(params: EvaluateParams, model: ModelParams | None = None, device: torch.device | str = "cpu"
                 ) -> tuple[Any, Any, GenEvalRules]:
    """(detector, colour classifier, rules) as the ``evaluate`` section says, the learned ones on ``device``."""
    trust = bool(model and model.trust_remote_code)
    detector = build_detector(params.detector, colours=params.colours, classes=params.classes,
                              path=params.detector_path, trust_remote_code=trust, device=device)
    colours = build_colour_classifier(params.colour_classifier, colours=params.colours, path=params.clip_path,
                                      trust_remote_code=trust, device=device)
    return detector, colours, rules_of(params)


def t2i_batches(prompts: list[dict[str, Any]], params: EvaluateParams) -> list[list[tuple[int, int]]]:
    """``(prompt, sample)`` index pairs in prompt then sample order, cut into ``batch_size`` batches.

    A batch is the unit of work a rank takes and the unit its noise is seeded by.
    """
    jobs = [(i, s) for i in range(len(prompts)) for s in range(params.samples_per_prompt)]
    return [jobs[start : start + params.batch_size] for start in range(0, len(jobs), params.batch_size)]


def generate_images(adapter: UMMAdapter, prompts: list[dict[str, Any]], params: EvaluateParams,
                    workers: Workers | None = None) -> dict[int, list[Image.Image]]:
    """Text-to-image samples of this rank's batches (:func:`t2i_batches`): ``{batch index: its images}``."""
    workers = workers or Workers()
    batches = t2i_batches(prompts, params)
    images: dict[int, list[Image.Image]] = {}
    for b in tqdm(workers.share(len(batches)), desc=f"t2i {adapter.name}", unit="batch", disable=not workers.is_main):
        out = adapter.generate(Condition(texts=[prompts[i]["prompt"] for i, _ in batches[b]]),
                               guidance_scale=params.guidance_scale, temperature=params.temperature,
                               generator=_generator(params.seed, b, workers.device))
        images[b] = [to_pil(pixels) for pixels in out]
    return images


def colour_bias_scores(rows: list[dict[str, Any]], prompts: list[dict[str, Any]],
                       usual: dict[str, str]) -> dict[str, float]:
    """% correct images of ``colors`` / ``color_attr`` prompts with usual vs unusual colour pairs."""
    if not usual:
        return {}
    is_usual = usual_colour_split(prompts, usual)
    buckets: dict[str, list[bool]] = {}
    for row in rows:
        key = metadata_key(json.loads(row["metadata"]))
        if row["tag"] in ("colors", "color_attr") and key in is_usual:
            name = f"{row['tag']}_{'usual' if is_usual[key] else 'unusual'}"
            buckets.setdefault(name, []).append(bool(row["correct"]))
    return {name: sum(v) / len(v) for name, v in sorted(buckets.items())}


def _understanding_copy(image: Image.Image, settings: dict[str, Any], size: int) -> torch.Tensor:
    """The reconstruction degraded as `degrade` made the understanding copy of the input."""
    image = resize(image, int(settings.get("understanding_size", size)), settings.get("resize_mode", "center_crop"))
    return to_tensor(degrade(image, float(settings.get("blur_sigma", 0.0)),
                             float(settings.get("downup_factor", 1.0))))


def reconstruction_batches(adapter: UMMAdapter, heldout: ImageTable, params: EvaluateParams,
                           degrade_settings: dict[str, Any], workers: Workers | None = None
                           ) -> dict[int, dict[str, Any]]:
    """Held-out images regenerated from their ``h_v``, for this rank's batches of the first ``n_reconstruction``.

    Returns ``{batch index: {"psnr", "ssim", "cosine": per-image tensors, "inputs", "outputs": images}}``.
    """
    workers = workers or Workers()
    device = workers.device
    n = min(params.n_reconstruction, len(heldout))
    starts = range(0, n, params.batch_size)
    parts: dict[int, dict[str, Any]] = {}
    for b in workers.share(len(starts)):
        idx = list(range(starts[b], min(starts[b] + params.batch_size, n)))
        h_v = adapter.embed_images(heldout.pixels(idx, "understanding").to(device))
        target = heldout.pixels(idx, "generation").to(device)
        out = adapter.generate(Condition(texts=[EVAL_TEMPLATE] * len(idx), image_embeddings=h_v),
                               guidance_scale=params.guidance_scale, temperature=params.temperature,
                               generator=_generator(params.seed + 1, b, device))
        recon = [to_pil(o) for o in out]
        again = torch.stack([_understanding_copy(r, degrade_settings, adapter.understanding_size) for r in recon])
        parts[b] = {"psnr": psnr(out, target).cpu(), "ssim": ssim(out, target).cpu(),
                    "cosine": embedding_cosine(h_v, adapter.embed_images(again.to(device))).cpu(),
                    "inputs": [to_pil(t) for t in target], "outputs": recon}
    return parts


def fidelity_scores(batches: list[dict[str, Any]]) -> tuple[dict[str, float], list[Any], list[Any]]:
    """PSNR, SSIM and h_v cosine over every reconstruction batch, in order; (metrics, inputs, outputs)."""
    if not batches:
        return {}, [], []
    mean = {name: torch.cat([part[name] for part in batches]).mean().item() for name in ("psnr", "ssim", "cosine")}
    return ({"recon_psnr": mean["psnr"], "recon_ssim": mean["ssim"], "recon_hv_cosine": mean["cosine"]},
            [image for part in batches for image in part["inputs"]],
            [image for part in batches for image in part["outputs"]])


def score_batches(images: dict[int, list[Image.Image]], prompts: list[dict[str, Any]], params: EvaluateParams,
                  folder: Path, scorer: tuple[Any, Any, GenEvalRules]) -> dict[int, list[dict[str, Any]]]:
    """GenEval result rows of generated batches (``{batch index: images}``), named as in the GenEval ``folder``."""
    batches = t2i_batches(prompts, params)
    detector, colours, rules = scorer
    return {b: score_images(batch, [prompts[i] for i, _ in batches[b]],
                            [str(sample_path(folder, i, s)) for i, s in batches[b]], detector, colours, rules)
            for b, batch in images.items()}


def _evaluate_model(adapter: UMMAdapter, prompts: list[dict[str, Any]], heldout: ImageTable,
                    params: EvaluateParams, degrade_settings: dict[str, Any], folder: Path,
                    scorer: tuple[Any, Any, GenEvalRules], workers: Workers) -> tuple[Any, ...] | None:
    """This rank's share of one model's work, merged on rank 0; None on the other ranks.

    Returns:
        ``(images per prompt, result rows, fidelity metrics, reconstruction inputs, reconstructions)``.
    """
    with torch.no_grad():
        images = generate_images(adapter, prompts, params, workers)
        rows = score_batches(images, prompts, params, folder, scorer)
        recon = reconstruction_batches(adapter, heldout, params, degrade_settings, workers)
    t2i = workers.gather({b: (images[b], rows[b]) for b in images})
    recon_parts = workers.gather(recon)
    if t2i is None:
        return None
    jobs = [job for batch in t2i_batches(prompts, params) for job in batch]
    per_prompt: list[list[Image.Image]] = [[] for _ in prompts]
    for (i, _), image in zip(jobs, [image for batch, _ in t2i for image in batch], strict=True):
        per_prompt[i].append(image)
    return per_prompt, [row for _, batch_rows in t2i for row in batch_rows], *fidelity_scores(recon_parts)


def run(params: EvaluateParams, model: ModelParams, degraded_dir: str | Path, models: dict[str, str | Path],
        metrics_path: str | Path, report_dir: str | Path, tracker: StageRun,
        plot_data_path: str | Path | None = None, chart_path: str | Path | None = None) -> dict[str, Any]:
    """Score every model in ``models`` (name -> directory) on identical prompts and seeds.

    Args:
        params: The ``evaluate`` section.
        model: The ``model`` section (adapter name, trust_remote_code).
        degraded_dir: Output of `degrade` (held-out images and ``degrade.json``).
        models: Model name -> model directory, e.g. ``{"sft": ..., "reca": ...}``.
        metrics_path: Where ``metrics.json`` goes (DVC metrics).
        report_dir: Where grids, tables and GenEval folders go.
        tracker: The MLflow stage run.
        plot_data_path: Per-task table for ``dvc plots`` (default: next to ``metrics_path``).
        chart_path: Per-task bar chart PNG (default: next to ``metrics_path``).

    Returns:
        ``{model: metrics}`` plus ``delta`` (second minus first) when there are two models.
    """
    if not models:
        raise ValueError("no models to evaluate")
    workers = join_workers()
    tracker.log_params(flatten(params, "evaluate"))
    prompts = build_prompts(params)
    scorer = build_scorer(params, model, workers.device)
    heldout = ImageTable.from_manifest(degraded_dir, "heldout")
    record = Path(degraded_dir) / DEGRADE_RECORD
    degrade_settings = read_json(record) if record.exists() else {}
    report_dir = Path(report_dir)
    if workers.is_main:
        write_metadata(report_dir / "evaluation_metadata.jsonl", prompts)
    metrics: dict[str, Any] = {}
    t2i_images: dict[str, list[list[Image.Image]]] = {}
    recon: dict[str, list[Any]] = {}
    results: dict[str, list[dict[str, Any]]] = {}
    for name, directory in models.items():
        adapter = load_model_dir(directory, model).eval().to(workers.device)
        folder = report_dir / name / "geneval"
        merged = _evaluate_model(adapter, prompts, heldout, params, degrade_settings, folder, scorer, workers)
        del adapter
        if merged is None:  # not rank 0: its batches went to rank 0
            continue
        images, rows, fidelity, recon_in, recon_out = merged
        write_folder(folder, prompts, images)
        write_jsonl(report_dir / name / "results.jsonl", rows)
        results[name] = rows
        metrics[name] = {**summarize(rows), **colour_bias_scores(rows, prompts, params.usual_colours), **fidelity}
        t2i_images[name] = images
        recon[name] = recon_out
        recon["input"] = recon_in
        tracker.log_metrics({f"{name}.{k}": v for k, v in metrics[name].items()})
        if tracker.active:
            # The registered model version (if `train` registered this directory) carries its scores.
            tag_version_with_metrics(directory, {k: v for k, v in metrics[name].items()
                                                 if isinstance(v, (int, float))})
    if not workers.is_main:
        return {"rank": workers.rank, "processes": workers.world_size}
    names = list(models)
    intervals = None
    if len(names) == 2:
        a, b = names
        metrics["delta"] = {k: metrics[b][k] - metrics[a][k] for k in metrics[a]
                            if k in metrics[b] and not k.endswith("_images")}
        intervals = difference_intervals(results[a], results[b], usual_colour_split(prompts, params.usual_colours))
        # flat, like "delta": `dvc metrics show` prints nested numbers, not lists
        metrics["delta_95_low"] = {k: lo for k, (lo, _) in intervals.items()}
        metrics["delta_95_high"] = {k: hi for k, (_, hi) in intervals.items()}
    write_json(metrics_path, metrics)
    with atomic_path(report_dir / "comparison.md") as tmp:
        tmp.write_text(markdown_table(metrics, names, intervals), encoding="utf-8")
    plot_data_path = Path(plot_data_path or Path(metrics_path).with_name("per_task.json"))
    chart_path = Path(chart_path or Path(metrics_path).with_name("per_task.png"))
    write_json(plot_data_path, plot_rows(metrics, names))
    bar_chart(chart_path, metrics, names)
    _save_grids(report_dir, prompts, t2i_images, recon, names, params)
    for path in (metrics_path, plot_data_path, chart_path):
        tracker.log_artifact(path)
    tracker.log_artifact(report_dir, artifact_path="report")
    return metrics


def _save_grids(report_dir: Path, prompts: list[dict[str, Any]], t2i: dict[str, list[list[Image.Image]]],
                recon: dict[str, list[Any]], names: list[str], params: EvaluateParams) -> None:
    k = min(params.grid_size, len(prompts))
    # Spread the shown prompts over the whole list so every task appears.
    shown = sorted({round(i * (len(prompts) - 1) / max(k - 1, 1)) for i in range(k)}) if prompts else []
    # one column per prompt, headed by its text: a reader sees what each sample was asked for
    save_grid(report_dir / "samples.png", [(n, [t2i[n][i][0] for i in shown]) for n in names], label_width=60,
              header=[prompts[i]["prompt"] for i in shown])
    save_grid(report_dir / "prompts.png",
              [(prompts[i]["prompt"], [img for n in names for img in t2i[n][i][:1]]) for i in shown], header=names)
    if recon.get("input"):
        m = min(params.grid_size, len(recon["input"]))
        save_grid(report_dir / "reconstructions.png",
                  [("input", recon["input"][:m]), *[(n, recon[n][:m]) for n in names]], label_width=60)
