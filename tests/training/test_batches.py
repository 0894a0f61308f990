"""Tests for deterministic batch plans (reca.training.batches.BatchPlanner)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reca.data.dataset import ImageTable
from reca.data.transforms import to_tensor
from reca.training.batches import BatchPlanner

TEMPLATES = ["Reconstruct:", "Draw this again:", "Same image:"]
INSTRUCTIONS = ["Describe the image.", "What is shown?"]
KIND_OFFSET = {"generation": 0.0, "understanding": 0.5}


class FakeTable(ImageTable):
    """An ImageTable whose 'pixels' encode the row index (and kind), so batches can be decoded."""

    def __init__(self, n: int) -> None:
        super().__init__("/nonexistent", [{"id": f"img{i}", "caption": f"caption {i}"} for i in range(n)])

    def pixels(self, indices: Sequence[int], kind: str) -> torch.Tensor:
        return torch.tensor([float(i) + KIND_OFFSET[kind] for i in indices]).view(-1, 1, 1, 1)


def _recon_idx(batch) -> list[int]:
    return [int(v) for v in batch.reconstruction.targets.flatten().tolist()]


def _cap_idx(batch) -> list[int]:
    return [int(c.split()[1]) for c in batch.captioned.captions]


def _planner(
    rank: int = 0,
    world: int = 1,
    *,
    n: int = 20,
    seed: int = 0,
    cfg_dropout: float = 0.1,
    features: torch.Tensor | None = None,
    **kw,
) -> BatchPlanner:
    return BatchPlanner(
        batch_size=4,
        seed=seed,
        rank=rank,
        world_size=world,
        cfg_dropout=cfg_dropout,
        templates=TEMPLATES,
        instructions=INSTRUCTIONS,
        unlabeled=FakeTable(n),
        captioned=FakeTable(n),
        features=features,
        **kw,
    )


def _same(a, b) -> bool:
    ra, rb, ca, cb = a.reconstruction, b.reconstruction, a.captioned, b.captioned
    return (
        torch.equal(ra.targets, rb.targets)
        and ra.templates == rb.templates
        and torch.equal(ra.drop, rb.drop)
        and torch.equal(ca.pixels, cb.pixels)
        and ca.captions == cb.captions
        and ca.instructions == cb.instructions
        and torch.equal(ca.drop, cb.drop)
    )


def test_batch_at_a_step_is_identical_across_planner_instances() -> None:
    first, second = _planner(seed=3), _planner(seed=3)
    for step in (0, 1, 7, 123):
        assert _same(first.batch(step), second.batch(step))
    # Order of queries does not matter: a resumed run at step 7 sees what an uninterrupted one saw.
    fresh = _planner(seed=3)
    assert _same(fresh.batch(7), first.batch(7))


def test_batches_differ_between_steps_and_seeds() -> None:
    planner = _planner()
    assert _recon_idx(planner.batch(0)) != _recon_idx(planner.batch(1))
    assert _cap_idx(planner.batch(0)) != _cap_idx(planner.batch(1))
    assert not _same(planner.batch(0), _planner(seed=1).batch(0))


def test_ranks_draw_disjoint_images_covering_each_epoch() -> None:
    n, world = 24, 2
    planners = [_planner(rank=r, world=world, n=n) for r in range(world)]
    # batch 4 x 2 ranks = 8 per step: steps 0..2 are exactly epoch 0, steps 3..5 epoch 1.
    for epoch in range(2):
        for kind in (_recon_idx, _cap_idx):
            seen: list[int] = []
            for step in range(epoch * 3, epoch * 3 + 3):
                per_rank = [kind(p.batch(step)) for p in planners]
                assert not set(per_rank[0]) & set(per_rank[1])
                seen += per_rank[0] + per_rank[1]
            assert sorted(seen) == list(range(n))


def test_epochs_are_reshuffled() -> None:
    planner = _planner(n=8)
    epoch0 = _recon_idx(planner.batch(0)) + _recon_idx(planner.batch(1))
    epoch1 = _recon_idx(planner.batch(2)) + _recon_idx(planner.batch(3))
    assert sorted(epoch0) == sorted(epoch1) == list(range(8))
    assert epoch0 != epoch1


def test_cfg_dropout_zero_never_drops() -> None:
    planner = _planner(cfg_dropout=0.0)
    for step in range(50):
        b = planner.batch(step)
        assert not b.reconstruction.drop.any()
        assert not b.captioned.drop.any()
        assert b.reconstruction.drop.dtype == torch.bool


def test_cfg_dropout_half_drops_about_half() -> None:
    planner = _planner(cfg_dropout=0.5)
    drops = torch.cat([planner.batch(s).reconstruction.drop for s in range(250)]).float()
    cap = torch.cat([planner.batch(s).captioned.drop for s in range(250)]).float()
    assert drops.numel() == 1000
    assert 0.44 < drops.mean().item() < 0.56
    assert 0.44 < cap.mean().item() < 0.56


def test_templates_and_instructions_are_drawn_from_the_given_lists() -> None:
    planner = _planner()
    templates, instructions = [], []
    for step in range(30):
        b = planner.batch(step)
        assert len(b.reconstruction.templates) == 4
        templates += b.reconstruction.templates
        instructions += b.captioned.instructions
    assert set(templates) == set(TEMPLATES)
    assert set(instructions) == set(INSTRUCTIONS)


def test_captioned_images_get_their_own_templates_only_when_a_bank_is_given() -> None:
    with_bank = BatchPlanner(batch_size=4, seed=0, templates=TEMPLATES, instructions=INSTRUCTIONS,
                             captioned=FakeTable(20))
    without = BatchPlanner(batch_size=4, seed=0, instructions=INSTRUCTIONS, captioned=FakeTable(20))
    drawn = []
    for step in range(30):
        a, b = with_bank.batch(step).captioned, without.batch(step).captioned
        assert len(a.templates) == 4 and b.templates == []
        # the templates are an extra draw: images, instructions and dropout do not change
        assert a.captions == b.captions and a.instructions == b.instructions and torch.equal(a.drop, b.drop)
        drawn += a.templates
    assert set(drawn) == set(TEMPLATES)
    again = BatchPlanner(batch_size=4, seed=0, templates=TEMPLATES, instructions=INSTRUCTIONS, captioned=FakeTable(20))
    assert again.batch(3).captioned.templates == with_bank.batch(3).captioned.templates


def test_live_encoder_gets_understanding_pixels_and_cached_features_replace_them() -> None:
    live = _planner().batch(2)
    assert live.reconstruction.features is None
    idx = _recon_idx(live)
    assert live.reconstruction.pixels.flatten().tolist() == [i + 0.5 for i in idx]

    features = torch.arange(20, dtype=torch.float32).view(20, 1) * 10
    cached = _planner(features=features).batch(2)
    assert cached.reconstruction.pixels is None
    assert cached.reconstruction.features.flatten().tolist() == [i * 10.0 for i in idx]


def test_only_configured_tables_produce_batches() -> None:
    only_unlabeled = BatchPlanner(batch_size=2, seed=0, templates=TEMPLATES, unlabeled=FakeTable(5))
    b = only_unlabeled.batch(0)
    assert b.reconstruction is not None and b.captioned is None
    only_captioned = BatchPlanner(batch_size=2, seed=0, instructions=INSTRUCTIONS, captioned=FakeTable(5))
    b = only_captioned.batch(0)
    assert b.captioned is not None and b.reconstruction is None


@pytest.mark.parametrize("which", ["unlabeled", "captioned"])
def test_empty_table_raises(which: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        BatchPlanner(
            batch_size=2, seed=0, templates=TEMPLATES, instructions=INSTRUCTIONS, **{which: FakeTable(0)}
        )


def test_feature_rows_must_match_unlabeled_rows() -> None:
    with pytest.raises(ValueError, match="3 cached feature rows for 5"):
        BatchPlanner(
            batch_size=2, seed=0, templates=TEMPLATES, unlabeled=FakeTable(5), features=torch.zeros(3, 1)
        )


def test_works_over_a_real_degraded_manifest(tmp_path: Path) -> None:
    rows = []
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for i, colour in enumerate(colours):
        for kind, size in (("understanding", 8), ("generation", 16)):
            path = tmp_path / kind / "unlabeled" / f"u{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (size, size), colour).save(path)
        rows.append(
            {
                "id": f"unlabeled/u{i}",
                "split": "unlabeled",
                "understanding": f"understanding/unlabeled/u{i}.png",
                "generation": f"generation/unlabeled/u{i}.png",
            }
        )
    rows.append(
        {
            "id": "captioned/c",
            "split": "captioned",
            "caption": "x",
            "understanding": "missing.png",
            "generation": "missing.png",
        }
    )
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    table = ImageTable.from_manifest(tmp_path, "unlabeled")
    assert len(table) == 4
    planner = BatchPlanner(batch_size=2, seed=0, templates=TEMPLATES, unlabeled=table)
    batch = planner.batch(0).reconstruction
    assert batch.targets.shape == (2, 3, 16, 16)
    assert batch.pixels.shape == (2, 3, 8, 8)
    # Each target is the generation copy of the same row as the understanding copy.
    for target, und in zip(batch.targets, batch.pixels, strict=True):
        assert torch.equal(target[:, 0, 0], und[:, 0, 0])
        colour = tuple(int(v) for v in np.asarray(((target[:, 0, 0] + 1) * 127.5).round()))
        assert colour in colours
        assert torch.equal(target, to_tensor(Image.new("RGB", (16, 16), colour)))
