"""Deterministic batch plans: what every rank trains on at every step.

Every random choice of a step (which images, which template, which samples
lose their condition) is a function of ``(seed, step, rank)`` alone. A run
resumed at step k therefore sees exactly the batches an uninterrupted run
would have, without saving sampler state, and two processes never draw the
same images at the same step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from reca.data.dataset import ImageTable
from reca.objectives.reca import CaptionedBatch, ReconstructionBatch, TrainBatch


def step_rng(seed: int, step: int, rank: int, stream: int) -> np.random.Generator:
    """An independent generator for one (seed, step, rank, stream)."""
    return np.random.default_rng([seed, step, rank, stream])


def _epoch_indices(n: int, batch: int, seed: int, step: int, rank: int, world: int, stream: int) -> list[int]:
    """Indices for one step, walking a per-epoch permutation shared by all ranks.

    Each rank takes a disjoint slice of the global batch; epochs reshuffle.
    """
    global_batch = batch * world
    start = step * global_batch + rank * batch
    out = []
    for pos in range(start, start + batch):
        epoch, offset = divmod(pos, n)
        perm = np.random.default_rng([seed, epoch, stream, 7]).permutation(n)
        out.append(int(perm[offset]))
    return out


class BatchPlanner:
    """Builds :class:`TrainBatch` es for the RecA objective from image tables."""

    def __init__(
        self,
        *,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        cfg_dropout: float = 0.1,
        templates: Sequence[str] = (),
        instructions: Sequence[str] = (),
        unlabeled: ImageTable | None = None,
        captioned: ImageTable | None = None,
        features: torch.Tensor | None = None,
    ) -> None:
        if unlabeled is not None and len(unlabeled) == 0:
            raise ValueError("the unlabeled split is empty: RecA has nothing to reconstruct")
        if captioned is not None and len(captioned) == 0:
            raise ValueError("the captioned split is empty")
        if features is not None and unlabeled is not None and features.shape[0] != len(unlabeled):
            raise ValueError(f"{features.shape[0]} cached feature rows for {len(unlabeled)} unlabeled images")
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.cfg_dropout = cfg_dropout
        self.templates = list(templates)
        self.instructions = list(instructions)
        self.unlabeled = unlabeled
        self.captioned = captioned
        self.features = features

    def batch(self, step: int) -> TrainBatch:
        """The batch this rank trains on at ``step``."""
        out = TrainBatch()
        if self.unlabeled is not None:
            idx = _epoch_indices(len(self.unlabeled), self.batch_size, self.seed, step, self.rank,
                                 self.world_size, stream=1)
            rng = step_rng(self.seed, step, self.rank, 1)
            out.reconstruction = ReconstructionBatch(
                targets=self.unlabeled.pixels(idx, "generation"),
                templates=[self.templates[i] for i in rng.integers(len(self.templates), size=len(idx))],
                drop=torch.from_numpy(rng.random(len(idx)) < self.cfg_dropout),
                features=None if self.features is None else self.features[idx],
                pixels=None if self.features is not None else self.unlabeled.pixels(idx, "understanding"),
            )
        if self.captioned is not None:
            idx = _epoch_indices(len(self.captioned), self.batch_size, self.seed, step, self.rank,
                                 self.world_size, stream=2)
            rng = step_rng(self.seed, step, self.rank, 2)
            out.captioned = CaptionedBatch(
                pixels=self.captioned.pixels(idx, "generation"),
                captions=self.captioned.captions(idx),
                instructions=[self.instructions[i] for i in rng.integers(len(self.instructions), size=len(idx))],
                drop=torch.from_numpy(rng.random(len(idx)) < self.cfg_dropout),
            )
        return out
