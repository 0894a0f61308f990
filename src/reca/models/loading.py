"""Building or loading the model a stage starts from, as `params.yaml`'s `model` section says.

Shared by `sft` (which may build from scratch) and by every later stage,
which loads the directory the previous stage wrote. It lives with the models,
not with the stages, so no stage imports another stage.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from reca.fileio import atomic_dir
from reca.models import registry
from reca.models.base import UMMAdapter
from reca.models.model_params import resolve_model_params
from reca.models.registration import ADAPTER_FILE, write_adapter_file
from reca.params import ModelParams


def weights_dtype(model: ModelParams) -> torch.dtype:
    """``model.dtype`` as a torch dtype; ``auto`` is bfloat16 where an accelerator is present, else float32."""
    if model.dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, model.dtype)


def load_model_dir(path: str | Path, model: ModelParams) -> UMMAdapter:
    """Load a model directory written by an earlier stage, in ``model.dtype``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: model directory not found; run the stage that writes it first")
    return registry.load(path, adapter=model.adapter, trust_remote_code=model.trust_remote_code,
                         dtype=weights_dtype(model), attn_implementation=model.attn_implementation)


def pass_through(source: str | Path, output_dir: str | Path, model: ModelParams) -> Path:
    """Copy a model directory (or a hub snapshot) to ``output_dir`` byte for byte, atomically.

    A stage that does not train (``sft.enabled: false``, ``post_sft.steps: 0``)
    must hand on exactly what it was given: the weights in their own dtype and
    every other file of the directory (processor, tokenizer, chat template),
    not a re-export of what the adapter happens to load. The adapter file is
    added when the source has none, so later stages and `reca generate` know
    the adapter without ``model.adapter``.
    """
    registry.get(model.adapter)  # an unknown adapter fails here, not stages later
    source_dir = Path(source)
    if not source_dir.is_dir():
        from huggingface_hub import snapshot_download

        try:
            source_dir = Path(snapshot_download(str(source), revision=model.revision))
        except Exception as err:  # noqa: BLE001 - any hub failure means the same thing here
            raise FileNotFoundError(
                f"model.pretrained {source!r} is neither a local directory nor a hub model that could be fetched "
                f"({type(err).__name__}). The default's published starting model comes from the repository's DVC "
                "remote: `dvc pull start_model` (make run does it)") from err
    with atomic_dir(output_dir) as tmp:
        shutil.copytree(source_dir, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git", ".cache"))
        if not (tmp / ADAPTER_FILE).exists():
            write_adapter_file(tmp, model.adapter)
    return Path(output_dir)


def initial_model(model: ModelParams, *, texts: Sequence[str], images: torch.Tensor | None,
                  seed: int) -> UMMAdapter:
    """The model `sft` starts from: ``model.pretrained`` if set, else a tiny one built from scratch."""
    model = resolve_model_params(model)  # a no-op on a section the command line already resolved
    cls = registry.get(model.adapter)
    if model.pretrained is not None:
        return cls.from_pretrained(model.pretrained, revision=model.revision,
                                   trust_remote_code=model.trust_remote_code, dtype=weights_dtype(model),
                                   attn_implementation=model.attn_implementation)
    if images is None:
        raise ValueError("building a model from scratch needs training images")
    return cls.build_from_scratch(model.tiny, texts=texts, images=images, seed=seed,
                                  image_tokenizer=model.image_tokenizer)
