"""Adapters by name: the only place that maps a model family to code.

The adapters register themselves (``reca.models.registration``) when their
modules are imported; this module imports them, and they never import it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from reca.models.base import UMMAdapter
from reca.models.registration import ADAPTER_FILE, REGISTERED


def _load_builtin() -> None:
    # Importing the modules runs their @register decorators.
    from reca.models import flow_matching, janus_ar, mar, masked  # noqa: F401


def available() -> list[str]:
    """Names of all registered adapters."""
    _load_builtin()
    return sorted(REGISTERED)


def get(name: str) -> type[UMMAdapter]:
    """The adapter class registered under ``name``."""
    _load_builtin()
    try:
        return REGISTERED[name]
    except KeyError:
        raise KeyError(f"unknown adapter {name!r}; available: {', '.join(sorted(REGISTERED))}") from None


def load(
    path: str | Path, *, adapter: str | None = None, revision: str | None = None, trust_remote_code: bool = False,
    dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa",
) -> UMMAdapter:
    """Load a model directory (or hub id) with the adapter it was saved by, or ``adapter``."""
    marker = Path(path, ADAPTER_FILE)
    if adapter is None:
        if not marker.exists():
            raise FileNotFoundError(
                f"{marker} not found: pass the adapter name explicitly (model.adapter in params.yaml)"
            )
        adapter = json.loads(marker.read_text())["adapter"]
    return get(adapter).from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code, dtype=dtype,
                                        attn_implementation=attn_implementation)
