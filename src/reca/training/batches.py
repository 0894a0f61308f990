"""Deterministic batch plans: what every rank trains on at every step.

Every random choice (which image, which template, whether the condition is
dropped) is a function of ``(seed, global sample position)`` alone, and each
rank takes its slice of the positions of a step. So a run resumed at step k
sees exactly the batches an uninterrupted run would have (no sampler state to
save), two processes never draw the same images at the same step, and one
process with batch 8 trains on exactly the samples two processes with batch 4
do: single- and multi-process loss curves are comparable.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from reca.data.dataset import ImageTable
from reca.data.embedding_cache import CachedSplit
from reca.objectives.reca import CaptionedBatch, ReconstructionBatch, TrainBatch


def sample_draws(seed: int, stream: int, positions: range, n_choices: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample random draws (a choice index and a uniform number) keyed by global sample position.

    Keyed by position rather than by step, so the same sample gets the same
    template and dropout whatever the batch size, accumulation or process count.
    """
    choices, uniforms = np.empty(len(positions), dtype=np.int64), np.empty(len(positions))
    for i, pos in enumerate(positions):
        rng = np.random.default_rng([seed, stream, pos, 11])
        choices[i] = rng.integers(n_choices)
        uniforms[i] = rng.random()
    return choices, uniforms


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int, stream: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, stream, 7]).permutation(n)


def _indices(n: int, positions: range, seed: int, stream: int) -> list[int]:
    """Image indices at global sample ``positions``, walking a per-epoch permutation (epochs reshuffle)."""
    out = []
    for pos in positions:
        epoch, offset = divmod(pos, n)
        out.append(int(_permutation(n, seed, epoch, stream)[offset]))
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
        accumulation: int = 1,
        cfg_dropout: float = 0.1,
        templates: Sequence[str] = (),
        instructions: Sequence[str] = (),
        unlabeled: ImageTable | None = None,
        captioned: ImageTable | None = None,
        features: torch.Tensor | CachedSplit | None = None,
    ) -> None:
        if unlabeled is not None and len(unlabeled) == 0:
            raise ValueError("the unlabeled split is empty: RecA has nothing to reconstruct")
        if captioned is not None and len(captioned) == 0:
            raise ValueError("the captioned split is empty")
        if features is not None and unlabeled is not None and features.shape[0] != len(unlabeled):
            raise ValueError(f"{features.shape[0]} cached feature rows for {len(unlabeled)} unlabeled images")
        if unlabeled is not None and not templates:
            raise ValueError("no reconstruction templates: the template bank is empty")
        if captioned is not None and not instructions:
            raise ValueError("no captioning instructions given")
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.accumulation = accumulation
        self.cfg_dropout = cfg_dropout
        self.templates = list(templates)
        self.instructions = list(instructions)
        self.unlabeled = unlabeled
        self.captioned = captioned
        self.features = features

    def positions(self, step: int, micro: int = 0) -> range:
        """Global sample positions this rank trains on at (step, micro)."""
        micro_step = step * self.accumulation + micro
        start = micro_step * self.batch_size * self.world_size + self.rank * self.batch_size
        return range(start, start + self.batch_size)

    def batch(self, step: int, micro: int = 0) -> TrainBatch:
        """The batch this rank trains on at optimiser ``step``, micro-batch ``micro``."""
        pos = self.positions(step, micro)
        out = TrainBatch()
        if self.unlabeled is not None:
            idx = _indices(len(self.unlabeled), pos, self.seed, stream=1)
            templates, u = sample_draws(self.seed, 1, pos, len(self.templates))
            out.reconstruction = ReconstructionBatch(
                targets=self.unlabeled.pixels(idx, "generation"),
                templates=[self.templates[i] for i in templates],
                drop=torch.from_numpy(u < self.cfg_dropout),
                features=None if self.features is None else self.features[idx],
                pixels=None if self.features is not None else self.unlabeled.pixels(idx, "understanding"),
            )
        if self.captioned is not None:
            idx = _indices(len(self.captioned), pos, self.seed, stream=2)
            instructions, u = sample_draws(self.seed, 2, pos, len(self.instructions))
            out.captioned = CaptionedBatch(
                pixels=self.captioned.pixels(idx, "generation"),
                captions=self.captioned.captions(idx),
                instructions=[self.instructions[i] for i in instructions],
                drop=torch.from_numpy(u < self.cfg_dropout),
            )
            if self.templates:
                templates, _ = sample_draws(self.seed, 3, pos, len(self.templates))
                out.captioned.templates = [self.templates[i] for i in templates]
        return out
