"""What `sft` and `train` share around the trainer: resumable checkpoint location and run logging.

Checkpoints live under ``checkpoints/<stage>/<run key>/``, outside the DVC
stage outputs that ``dvc repro`` deletes before a stage runs, and keyed by a
hash of the stage's params and inputs so a restart resumes only the run it
belongs to, never one made with other settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reca.distributed import accelerator, init_distributed
from reca.models.base import UMMAdapter
from reca.objectives.reca import RecAObjective
from reca.objectives.templates import CAPTION_INSTRUCTIONS
from reca.params import ModelParams, OptimParams, flatten
from reca.stage_files import DEGRADE_RECORD, DEGRADED_MANIFEST
from reca.tracking.mlflow_run import StageRun
from reca.training.batches import BatchPlanner
from reca.training.deepspeed_setup import build_config
from reca.training.registration import register, write_pointer
from reca.training.trainer import Trainer
from reca.training.zero3 import full_numel, partitioned_loading, unpartition


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, or of every file under a directory (sorted by path)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with f.open("rb") as stream:  # in chunks: a model file is gigabytes, and every rank digests it
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def checkpoint_dir(root: str | Path, stage: str, params: Any, inputs: dict[str, str]) -> Path:
    """Where this exact run (params + input digests) keeps its resumable checkpoints."""
    blob = json.dumps({"params": params.model_dump(mode="json"), "inputs": inputs}, sort_keys=True)
    return Path(root) / "checkpoints" / stage / hashlib.sha256(blob.encode()).hexdigest()[:12]


def degraded_digest(degraded_dir: str | Path) -> str:
    """Digest of what the ``degrade`` stage made: its manifest and its settings record.

    The manifest alone names the same images whatever the blur or resize, so
    without the settings a run on differently degraded images would resume (or
    reuse as finished) a checkpoint trained on the old ones.
    """
    directory = Path(degraded_dir)
    parts = [file_digest(directory / DEGRADED_MANIFEST)]
    if (directory / DEGRADE_RECORD).exists():
        parts.append(file_digest(directory / DEGRADE_RECORD))
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def continued_run_inputs(degraded_dir: str | Path, model_dir: str | Path, model: ModelParams) -> dict[str, str]:
    """Checkpoint-key inputs of a run that starts from a saved model: the data, those weights, the model params."""
    return {
        "degraded": degraded_digest(degraded_dir),
        "model": file_digest(model_dir),
        "model_params": model.model_dump_json(),
    }


def load_for_training(load: Callable[[], UMMAdapter], optim: OptimParams, freeze: Sequence[str]) -> UMMAdapter:
    """The model a training stage starts from, with ``freeze``'s parts frozen.

    Under ZeRO-3 the transformers models inside it load straight into
    partitions (:mod:`reca.training.zero3`), and the frozen parts come back out
    whole on every rank before anything (the cache key's fingerprint) reads
    them. Other stages load as usual.
    """
    if optim.zero_stage == 3:
        _, world_size = init_distributed()  # zero.Init partitions over the process group
        # the engine's own config (the trainer builds it the same way, from the working directory)
        with partitioned_loading(build_config(optim, on_cpu=accelerator() == "cpu", world_size=world_size)):
            adapter = load()
    else:
        adapter = load()
    adapter.set_frozen(freeze)
    parts = adapter.parts()
    unpartition(parts[name] for name in freeze)
    return adapter


def plan_batches(optim: OptimParams, **data: Any) -> BatchPlanner:
    """Join (or start) the process group and plan this rank's batches of ``data`` (BatchPlanner's splits)."""
    rank, world_size = init_distributed()
    return BatchPlanner(batch_size=optim.batch_size, seed=optim.seed, rank=rank, world_size=world_size,
                        accumulation=optim.gradient_accumulation_steps, cfg_dropout=optim.cfg_dropout,
                        instructions=CAPTION_INSTRUCTIONS, **data)


def run_training(
    objective: RecAObjective,
    planner: BatchPlanner,
    optim: OptimParams,
    ckpt_dir: Path,
    output_dir: str | Path,
    tracker: StageRun,
    stage: str,
    *,
    frozen_parts: tuple[str, ...] = (),
    copy_warn_ratio: float = 0.0,
    registered_model: str | None = None,
) -> dict[str, float]:
    """Set up, train, export HF weights to ``output_dir``; log params, curve and model to MLflow."""
    tracker.log_params(flatten(optim, stage))
    if optim.activation_checkpointing:
        objective.adapter.enable_activation_checkpointing()
    trainer = Trainer(
        objective, planner, optim, ckpt_dir,
        log_fn=lambda step, m: tracker.log_metrics(m, step),
        milestone_fn=lambda step, path: tracker.log_artifact(path, artifact_path=f"milestones/step{step:07d}", link=True),
        warn_fn=lambda key, message: tracker.set_tags({key: message}),
        frozen_parts=frozen_parts,
        copy_warn_ratio=copy_warn_ratio,
        desc=stage,
    )
    trainer.setup()
    tracker.log_params({"deepspeed.config": json.dumps(trainer.ds_config),
                        "deepspeed.world_size": trainer.world_size,
                        "trainable_parameters": sum(full_numel(p) for p in objective.adapter.trainable_parameters())})
    if trainer.step:
        tracker.set_tags({"reca.resumed_from_step": str(trainer.step)})
    final = trainer.train()
    trainer.save_checkpoint()
    trainer.export(output_dir)
    if tracker.active:
        # linked, not copied, where the store is local: the model is on disk once, not twice
        tracker.log_artifact(output_dir, artifact_path="model", link=True)
        if registered_model and tracker.run_id:
            info = register(tracker.run_id, registered_model)
            write_pointer(output_dir, info)
            tracker.set_tags({"reca.registered_model": f"{info['name']}/{info['version']}"})
    trainer.cleanup()
    return final
