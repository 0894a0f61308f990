"""Building or loading the model a stage starts from, as `params.yaml`'s `model` section says.

Shared by `sft` (which may build from scratch) and by every later stage,
which loads the directory the previous stage wrote. It lives with the models,
not with the stages, so no stage imports another stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from reca.models import registry
from reca.models.base import UMMAdapter
from reca.models.model_params import resolve_model_params
from reca.params import ModelParams


def load_model_dir(path: str | Path, model: ModelParams) -> UMMAdapter:
    """Load a model directory written by an earlier stage."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: model directory not found; run the stage that writes it first")
    return registry.load(path, adapter=model.adapter, trust_remote_code=model.trust_remote_code)


def initial_model(model: ModelParams, *, texts: Sequence[str], images: torch.Tensor | None,
                  seed: int) -> UMMAdapter:
    """The model `sft` starts from: ``model.pretrained`` if set, else a tiny one built from scratch."""
    model = resolve_model_params(model)  # a no-op on a section the command line already resolved
    cls = registry.get(model.adapter)
    if model.pretrained is not None:
        return cls.from_pretrained(model.pretrained, revision=model.revision,
                                   trust_remote_code=model.trust_remote_code)
    if images is None:
        raise ValueError("building a model from scratch needs training images")
    return cls.build_from_scratch(model.tiny, texts=texts, images=images, seed=seed,
                                  image_tokenizer=model.image_tokenizer)
