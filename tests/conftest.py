"""Shared fixtures: tiny models built from config classes with random weights.

Environment defaults keep every tool local and quiet, exactly as the Makefile
sets them, so ``pytest`` run by hand behaves like ``make test``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DVC_SITE_CACHE_DIR", str(REPO / ".cache" / "dvc-site"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
os.environ.setdefault("PREFECT_HOME", str(REPO / ".cache" / "prefect-tests"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from reca_fixtures.models import build_tiny_adapter  # noqa: E402


@pytest.fixture
def tiny_adapter():
    """A random-weight tiny Janus adapter with a fitted patch codebook."""
    return build_tiny_adapter()
