"""Fixtures shared by the tests, one module per kind (importable: pytest pythonpath is tests/).

* :mod:`reca_fixtures.models`: tiny adapters, images and texts, the adapter-protocol checks;
* :mod:`reca_fixtures.images`: raw image collections for the data stages;
* :mod:`reca_fixtures.workers`: functions spawned worker processes import;
* :mod:`reca_fixtures.tools`: dvc / reca / servers in a scratch repository;
* :mod:`reca_fixtures.tracking`: MLflow stores and a stand-in stage tracker.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

__all__ = ["REPO"]
