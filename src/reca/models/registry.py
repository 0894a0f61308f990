"""Adapters by name: the only place that maps a model family to code."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from reca.models.base import UMMAdapter

_REGISTRY: dict[str, type[UMMAdapter]] = {}
ADAPTER_FILE = "reca_adapter.json"

A = TypeVar("A", bound=type[UMMAdapter])


def register(name: str) -> Callable[[A], A]:
    """Class decorator: make an adapter available under ``name``."""

    def wrap(cls: A) -> A:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"adapter name {name!r} is already registered to {_REGISTRY[name].__name__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_builtin() -> None:
    # Importing the modules runs their @register decorators.
    from reca.models import flow_matching, janus_ar, mar, masked  # noqa: F401


def available() -> list[str]:
    """Names of all registered adapters."""
    _load_builtin()
    return sorted(_REGISTRY)


def get(name: str) -> type[UMMAdapter]:
    """The adapter class registered under ``name``."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown adapter {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def write_adapter_file(path: str | Path, name: str, **extra: object) -> None:
    """Record which adapter a saved model directory belongs to."""
    Path(path, ADAPTER_FILE).write_text(json.dumps({"adapter": name, **extra}, indent=2, sort_keys=True) + "\n")


def load(
    path: str | Path, *, adapter: str | None = None, revision: str | None = None, trust_remote_code: bool = False
) -> UMMAdapter:
    """Load a model directory (or hub id) with the adapter it was saved by, or ``adapter``."""
    marker = Path(path, ADAPTER_FILE)
    if adapter is None:
        if not marker.exists():
            raise FileNotFoundError(
                f"{marker} not found: pass the adapter name explicitly (model.adapter in params.yaml)"
            )
        adapter = json.loads(marker.read_text())["adapter"]
    return get(adapter).from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
