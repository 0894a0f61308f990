"""`sft`: caption->image and image->caption training on the captioned split.

On the embedded default it builds a tiny Janus from scratch (word tokenizer,
patch codebook fitted on the captioned images) and trains it; with
``model.pretrained`` set it fine-tunes that checkpoint; with ``sft.enabled:
false`` it passes the pretrained checkpoint through unchanged, so `train`
always starts from ``models/sft``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reca.data.dataset import ImageTable
from reca.objectives.reca import RecAObjective
from reca.objectives.templates import CAPTION_INSTRUCTIONS, RECONSTRUCTION_TEMPLATES
from reca.params import ModelParams, SFTParams, flatten
from reca.stages.model_loading import initial_model
from reca.tracking.mlflow_run import StageRun
from reca.training.batches import BatchPlanner
from reca.training.distributed import init_distributed
from reca.training.runs import checkpoint_dir, file_digest, run_training


def run(params: SFTParams, model: ModelParams, degraded_dir: str | Path, output_dir: str | Path,
        tracker: StageRun, root: str | Path = ".") -> dict[str, Any]:
    """Train (or pass through) the starting model; write it to ``output_dir`` in HF format."""
    captioned = ImageTable.from_manifest(degraded_dir, "captioned", require_caption=params.enabled)
    tracker.log_params({**flatten(model, "model"), "sft.enabled": params.enabled,
                        "data.captioned_images": len(captioned)})
    if not params.enabled:
        if model.pretrained is None:
            raise ValueError("sft.enabled is false but model.pretrained is null: nothing to pass through")
        adapter = initial_model(model, texts=[], images=None, seed=params.seed)
        adapter.save_pretrained(output_dir)
        return {"passed_through": model.pretrained}
    # The vocabulary must cover every text the model will ever read: captions,
    # the reconstruction templates RecA draws from, and captioning instructions.
    texts = [*captioned.captions(range(len(captioned))), *RECONSTRUCTION_TEMPLATES, *CAPTION_INSTRUCTIONS]
    adapter = initial_model(
        model,
        texts=texts,
        images=captioned.pixels(range(len(captioned)), "generation"),
        seed=params.seed,
    )
    adapter.set_frozen(params.freeze)
    objective = RecAObjective(adapter, lambda_reca=0.0, lambda_i2t=params.lambda_i2t, lambda_t2i=params.lambda_t2i)
    rank, world_size = init_distributed()
    planner = BatchPlanner(
        batch_size=params.batch_size,
        seed=params.seed,
        rank=rank,
        world_size=world_size,
        accumulation=params.gradient_accumulation_steps,
        cfg_dropout=params.cfg_dropout,
        instructions=CAPTION_INSTRUCTIONS,
        captioned=captioned,
    )
    inputs = {"degraded": file_digest(Path(degraded_dir) / "manifest.jsonl"), "model": model.model_dump_json()}
    ckpt = checkpoint_dir(root, "sft", params, inputs)
    return run_training(objective, planner, params, ckpt, output_dir, tracker, "sft",
                        frozen_parts=tuple(params.freeze))

