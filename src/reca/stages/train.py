"""`train`: RecA post-training with DeepSpeed, starting from ``models/sft``.

    L = λ_reca · L_reca + λ_i2t · L_i2t + λ_t2i · L_t2i

The reconstruction term reads the unlabeled split; the i2t and t2i terms read
the captioned split (only when their weights are positive). With the
understanding encoder frozen, ``h_v`` features come from the `embed` cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reca.data import embedding_cache
from reca.data.dataset import ImageTable
from reca.fileio import read_json
from reca.inference import unknown_words
from reca.models.base import UMMAdapter
from reca.models.loading import load_model_dir
from reca.objectives.reca import RecAObjective
from reca.objectives.templates import TemplateBank, load_templates
from reca.params import ModelParams, ParamsError, TrainParams, flatten
from reca.stage_files import DEGRADE_RECORD
from reca.tracking.mlflow_run import StageRun
from reca.training.runs import (
    checkpoint_dir,
    continued_run_inputs,
    load_for_training,
    plan_batches,
    run_training,
)


def run(params: TrainParams, model: ModelParams, degraded_dir: str | Path, model_dir: str | Path,
        embeddings_dir: str | Path, output_dir: str | Path, tracker: StageRun,
        root: str | Path = ".") -> dict[str, Any]:
    """RecA-train the model in ``model_dir``; write the result to ``output_dir``."""
    adapter = load_for_training(lambda: load_model_dir(model_dir, model), params, params.freeze)
    templates = load_templates(params.template_file)
    _check_model_reads(adapter, templates, params.template_file)
    unlabeled = ImageTable.from_manifest(degraded_dir, "unlabeled") if params.lambda_reca > 0 else None
    needs_captions = params.lambda_i2t > 0 or params.lambda_t2i > 0
    captioned = ImageTable.from_manifest(degraded_dir, "captioned", require_caption=True) if needs_captions else None

    features = None
    use_cache = (params.use_embedding_cache and unlabeled is not None and params.condition == "understanding"
                 and "understanding_encoder" in params.freeze)
    if use_cache:
        key = embedding_cache.key_for(adapter, model.revision, read_json(Path(degraded_dir) / DEGRADE_RECORD))
        features = embedding_cache.open_split(embeddings_dir, "unlabeled", key=key,
                                              ids=unlabeled.ids(range(len(unlabeled))))
    tracker.log_params({
        **flatten(model, "model"),
        "train.templates": len(templates),
        "train.h_v_source": "cache" if use_cache else "live",
        "data.unlabeled_images": len(unlabeled) if unlabeled else 0,
        "data.captioned_images": len(captioned) if captioned else 0,
    })
    objective = RecAObjective(
        adapter,
        lambda_reca=params.lambda_reca,
        lambda_i2t=params.lambda_i2t,
        lambda_t2i=params.lambda_t2i,
        condition=params.condition,
    )
    planner = plan_batches(params, templates=list(templates), unlabeled=unlabeled, captioned=captioned,
                           features=features)
    ckpt = checkpoint_dir(root, "train", params, continued_run_inputs(degraded_dir, model_dir, model))
    return run_training(objective, planner, params, ckpt, output_dir, tracker, "train",
                        frozen_parts=tuple(params.freeze), copy_warn_ratio=params.copy_warn_ratio,
                        registered_model=params.registered_model)


def _check_model_reads(adapter: UMMAdapter, templates: TemplateBank, template_file: str | None) -> None:
    """Refuse templates with words the model's tokenizer reads as ``<unk>``: they would condition nothing."""
    unknown = sorted({word for template in templates for word in unknown_words(adapter, template)})
    if unknown:
        source = template_file or "the built-in template bank"
        # a ParamsError: the CLI reports it as a bad setting (exit 2), not as a crash
        raise ParamsError(
            f"train.template_file ({source}): the model's tokenizer does not know {unknown}. A model built from scratch learns only the "
            "words it was trained on: make it again (`make start-model` for the published one, or `reca sft` with "
            "model.pretrained null; both read train.template_file) or reword the templates")
