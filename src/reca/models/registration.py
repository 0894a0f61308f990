"""How an adapter makes itself known: the ``@register`` decorator, and the marker file of a saved model.

Adapter modules import this module, never the registry: ``reca.models.registry``
imports the adapter modules to look them up by name, so an adapter that
imported the registry back would close a circle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from reca.models.base import UMMAdapter

#: adapter name -> class, filled by :func:`register` as the adapter modules are imported
REGISTERED: dict[str, type[UMMAdapter]] = {}
#: the file in a saved model directory that names the adapter it was saved by
ADAPTER_FILE = "reca_adapter.json"

A = TypeVar("A", bound=type[UMMAdapter])


def register(name: str) -> Callable[[A], A]:
    """Class decorator: make an adapter available under ``name``."""

    def wrap(cls: A) -> A:
        if name in REGISTERED and REGISTERED[name] is not cls:
            raise ValueError(f"adapter name {name!r} is already registered to {REGISTERED[name].__name__}")
        cls.name = name
        REGISTERED[name] = cls
        return cls

    return wrap


def write_adapter_file(path: str | Path, name: str, **extra: object) -> None:
    """Record which adapter a saved model directory belongs to."""
    Path(path, ADAPTER_FILE).write_text(json.dumps({"adapter": name, **extra}, indent=2, sort_keys=True) + "\n")
