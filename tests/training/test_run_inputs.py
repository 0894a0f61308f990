"""What keys a run's resumable checkpoints: the same data and settings resume, anything else starts afresh."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from reca.params import ModelParams, TrainParams
from reca.training.runs import checkpoint_dir, continued_run_inputs, degraded_digest


def _degraded(directory: Path, downup_factor: float) -> Path:
    directory.mkdir(parents=True)
    (directory / "manifest.jsonl").write_text('{"id": "a", "split": "unlabeled"}\n{"id": "b", "split": "unlabeled"}\n')
    (directory / "degrade.json").write_text(json.dumps({"blur_sigma": 0.0, "downup_factor": downup_factor}))
    return directory


def test_other_degrade_settings_with_the_same_manifest_get_another_checkpoint(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"weights")
    half = _degraded(tmp_path / "half", 0.5)
    clean = _degraded(tmp_path / "clean", 1.0)
    same = tmp_path / "same"
    shutil.copytree(half, same)

    assert degraded_digest(half) == degraded_digest(same)
    assert degraded_digest(half) != degraded_digest(clean)
    params, model = TrainParams(), ModelParams()

    def key(degraded: Path) -> Path:
        return checkpoint_dir(tmp_path, "train", params, continued_run_inputs(degraded, model_dir, model))

    before = key(half)
    assert before == key(same)
    assert before != key(clean)
    (model_dir / "model.safetensors").write_bytes(b"other weights")  # another starting model
    assert key(half) != before
