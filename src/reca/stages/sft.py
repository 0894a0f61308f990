"""`sft`: caption->image and image->caption training on the captioned split.

On the embedded default it builds a tiny Janus from scratch (word tokenizer,
patch codebook fitted on the captioned images) and trains it; with
``model.pretrained`` set it fine-tunes that checkpoint; with ``sft.enabled:
false`` it passes the pretrained checkpoint through unchanged, so `train`
always starts from ``models/sft``. ``sft.lambda_reca`` adds reconstruction of
the captioned images from their own ``h_v``, so the starting model already
knows the condition RecA trains. The reconstruction templates are RecA's own
(``train.template_file``, or the built-in bank): a model built from scratch
learns their words, and the SFT terms that read templates draw from them.

`post_sft` (:func:`run_post`) is the same objective after RecA, for the
RecA->SFT order of the paper's ablation; with 0 steps (the default) it passes
``models/reca`` through as the final model.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from reca.data.dataset import ImageTable
from reca.distributed import is_rank_zero
from reca.fileio import write_json
from reca.models.base import UMMAdapter
from reca.models.loading import initial_model, load_model_dir, pass_through
from reca.models.model_params import resolve_model_params
from reca.objectives.sft import SFTObjective
from reca.objectives.templates import CAPTION_INSTRUCTIONS, RECONSTRUCTION_TEMPLATES
from reca.params import ModelParams, PostSFTParams, SFTObjectiveParams, SFTParams, StartModelParams, flatten
from reca.stage_files import START_MODEL_LINEAGE
from reca.tracking.lineage import git_tags
from reca.tracking.mlflow_run import StageRun
from reca.training.registration import read_pointer, write_pointer
from reca.training.runs import (
    checkpoint_dir,
    continued_run_inputs,
    degraded_digest,
    load_for_training,
    plan_batches,
    run_training,
)


def run(params: SFTParams, model: ModelParams, degraded_dir: str | Path, output_dir: str | Path,
        tracker: StageRun, root: str | Path = ".", templates: Sequence[str] = RECONSTRUCTION_TEMPLATES
        ) -> dict[str, Any]:
    """Train (or pass through) the starting model; write it to ``output_dir`` in HF format."""
    captioned = ImageTable.from_manifest(degraded_dir, "captioned", require_caption=params.enabled)
    tracker.log_params({**flatten(model, "model"), "sft.enabled": params.enabled,
                        "data.captioned_images": len(captioned)})
    if not params.enabled:
        if model.pretrained is None:
            raise ValueError("sft.enabled is false but model.pretrained is null: nothing to pass through")
        pass_through(model.pretrained, output_dir, model)
        return {"passed_through": model.pretrained}
    # The vocabulary must cover every text the model will ever read: captions,
    # the reconstruction templates RecA draws from, and captioning instructions.
    texts = [*captioned.captions(range(len(captioned))), *templates, *CAPTION_INSTRUCTIONS]
    images = captioned.pixels(range(len(captioned)), "generation")
    adapter = load_for_training(lambda: initial_model(model, texts=texts, images=images, seed=params.seed),
                                params, params.freeze)
    inputs = {"degraded": degraded_digest(degraded_dir), "model": model.model_dump_json()}
    return _train_sft(adapter, params, captioned, inputs, output_dir, tracker, "sft", root, templates)


def run_start_model(params: StartModelParams, model: ModelParams, degraded_dir: str | Path, output_dir: str | Path,
                    tracker: StageRun, root: str | Path = ".", templates: Sequence[str] = RECONSTRUCTION_TEMPLATES
                    ) -> dict[str, Any]:
    """Train the tiny starting model from scratch (``model.tiny``) and record where it came from.

    ``model.pretrained`` is ignored: this is what makes the model that the
    default ``model.pretrained`` names. Beside the weights, ``lineage.json``
    records the params, the data's digests, the seed and the commit, so the
    shipped model says how to make it again.
    """
    scratch = model.model_copy(update={"pretrained": None, "revision": None})
    metrics = run(SFTParams(**params.model_dump(), enabled=True), scratch, degraded_dir, output_dir, tracker,
                  root, templates)
    if is_rank_zero():
        write_json(Path(output_dir) / START_MODEL_LINEAGE, start_model_lineage(params, scratch, degraded_dir, root))
    return metrics


def start_model_lineage(params: StartModelParams, model: ModelParams, degraded_dir: str | Path,
                        root: str | Path = ".") -> dict[str, Any]:
    """What the starting model was made from: params, data digests, seed, commit, date."""
    raw = Path(root) / "data.dvc"
    return {
        "made_by": "reca start-model (dvc stage start_model; `make start-model` makes it again)",
        "params": {"start_model": params.model_dump(mode="json"),
                   "model": resolve_model_params(model).model_dump(mode="json", exclude={"pretrained", "revision"})},
        "seed": params.seed,
        "data": {"degraded": degraded_digest(degraded_dir),
                 "raw": yaml.safe_load(raw.read_text())["outs"][0]["md5"] if raw.exists() else None},
        "git_commit": git_tags(root)["git.commit"],
        "git_dirty": git_tags(root)["git.dirty"] == "true",  # tracked files differed from that commit
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def run_post(params: PostSFTParams, model: ModelParams, degraded_dir: str | Path, model_dir: str | Path,
             output_dir: str | Path, tracker: StageRun, root: str | Path = ".",
             templates: Sequence[str] = RECONSTRUCTION_TEMPLATES) -> dict[str, Any]:
    """SFT the RecA model in ``model_dir`` for ``params.steps`` more steps (RecA->SFT); 0 steps passes it through."""
    captioned = ImageTable.from_manifest(degraded_dir, "captioned", require_caption=params.trains)
    tracker.log_params({**flatten(model, "model"), "post_sft.steps": params.steps,
                        "data.captioned_images": len(captioned)})
    registered = read_pointer(model_dir)
    if not params.trains:
        pass_through(model_dir, output_dir, model)
        if registered is not None:  # the same weights: evaluate tags the version `train` registered
            write_pointer(output_dir, registered)
        return {"passed_through": str(model_dir)}
    adapter = load_for_training(lambda: load_model_dir(model_dir, model), params, params.freeze)
    inputs = continued_run_inputs(degraded_dir, model_dir, model)
    # The final model is a new version of the model `train` registered.
    return _train_sft(adapter, params, captioned, inputs, output_dir, tracker, "post_sft", root, templates,
                      registered_model=None if registered is None else registered["name"])


def _train_sft(adapter: UMMAdapter, params: SFTObjectiveParams, captioned: ImageTable, inputs: dict[str, str],
               output_dir: str | Path, tracker: StageRun, stage: str, root: str | Path, templates: Sequence[str],
               registered_model: str | None = None) -> dict[str, Any]:
    """The SFT objective (t2i + i2t, optionally reconstruction and alignment, on the captioned split) on
    ``adapter`` (loaded by :func:`load_for_training`, its parts frozen), resumable under ``checkpoints/<stage>``."""
    objective = SFTObjective(adapter, lambda_reca=params.lambda_reca, lambda_i2t=params.lambda_i2t,
                             lambda_t2i=params.lambda_t2i, lambda_align=params.lambda_align, align_at=params.align_at)
    # Reconstruction templates enter an SFT batch only for the terms that read them.
    reconstructs = params.lambda_reca > 0
    aligns_conditions = params.lambda_align > 0 and params.align_at == "condition_states"
    planner = plan_batches(params, captioned=captioned, unlabeled=captioned if reconstructs else None,
                           templates=list(templates) if reconstructs or aligns_conditions else ())
    # the bank is an input: other templates (and, from scratch, another vocabulary) make another run
    ckpt = checkpoint_dir(root, stage, params, {**inputs, "templates": "\n".join(templates)})
    return run_training(objective, planner, params, ckpt, output_dir, tracker, stage,
                        frozen_parts=tuple(params.freeze), registered_model=registered_model)
