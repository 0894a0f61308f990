"""scripts/condition_alignment.py: does a text prompt land where the h_v of a matching image does?"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from reca_fixtures import REPO
from reca_fixtures.models import build_tiny_adapter, one_torch_thread

spec = importlib.util.spec_from_file_location("condition_alignment", REPO / "scripts" / "condition_alignment.py")
condition_alignment = importlib.util.module_from_spec(spec)
spec.loader.exec_module(condition_alignment)

SHAPES, COLOURS = ("circle", "square", "triangle"), ("red", "blue", "yellow", "green")
PAIRS = [(s, c) for s in SHAPES for c in COLOURS]

_single_thread = pytest.fixture(autouse=True)(one_torch_thread)


def _synthetic(text_from_image: bool, renders: int = 8, dim: int = 24, seed: int = 0):
    """Image states = colour direction + shape direction + noise; text states either share them or not."""
    g = torch.Generator().manual_seed(seed)
    colour_dir, shape_dir = torch.randn(len(COLOURS), dim, generator=g), torch.randn(len(SHAPES), dim, generator=g)
    content = torch.stack([shape_dir[SHAPES.index(s)] + colour_dir[COLOURS.index(c)] for s, c in PAIRS])
    images = content[:, None] + 0.1 * torch.randn(len(PAIRS), renders, dim, generator=g) + 5.0  # a modality offset
    text = content - 3.0 if text_from_image else torch.randn(len(PAIRS), dim, generator=g)
    return text[None], images.mean(dim=1)[None], images[None]


def test_aligned_conditions_retrieve_and_transfer_despite_a_modality_offset() -> None:
    (row,) = condition_alignment.alignment(*_synthetic(True), PAIRS, COLOURS)
    assert row == {"retrieval_pair": 100.0, "retrieval_colour": 100.0, "retrieval_shape": 100.0,
                   "probe_image": 100.0, "probe_text": 100.0, "probe_transfer": 100.0}


def test_unrelated_text_states_do_not_transfer_though_images_carry_colour() -> None:
    rows = [condition_alignment.alignment(*_synthetic(False, seed=seed), PAIRS, COLOURS)[0] for seed in range(5)]
    assert all(row["probe_image"] == 100.0 for row in rows)
    assert sum(row["probe_transfer"] for row in rows) / len(rows) < 50.0
    assert sum(row["retrieval_pair"] for row in rows) / len(rows) < 30.0


def test_states_of_a_real_adapter_have_one_row_per_layer_and_pair() -> None:
    adapter = build_tiny_adapter().eval()
    pairs = PAIRS[:3]
    text, image_mean, images = condition_alignment.states(adapter, pairs, renders=2, seed=0,
                                                          degrade_params={"downup_factor": 0.5})
    layers = adapter.model.config.text_config.num_hidden_layers
    dim = adapter.model.config.text_config.hidden_size
    assert text.shape == (layers, 3, dim) and image_mean.shape == (layers, 3, dim)
    assert images.shape == (layers, 3, 2, dim)
    assert torch.allclose(images.mean(dim=2), image_mean)
    # every text prompt differs, so the states after the first layer differ too
    assert not torch.allclose(text[-1, 0], text[-1, 1])
    rows = condition_alignment.alignment(text, image_mean, images, pairs, ["red", "blue", "yellow"])
    assert len(rows) == layers and all(0.0 <= v <= 100.0 for row in rows for v in row.values())
