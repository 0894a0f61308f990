"""Run-health monitors: token-copying collapse and peak memory.

Token copying is RecA's known failure: when the understanding condition is
too detailed (high resolution, no blur), the generator learns to copy it and
the reconstruction loss collapses towards zero without the model learning
anything about semantics. A collapse far below the starting model's loss is
the signal; the remedy is a lower ``degrade.understanding_size`` or blur.
"""

from __future__ import annotations

import resource

import torch


class TokenCopyingMonitor:
    """Warns once when ``loss_reca`` falls below ``ratio`` x the starting model's."""

    def __init__(self, ratio: float, baseline: float | None = None) -> None:
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"ratio must be in (0, 1), got {ratio}")
        self.ratio = ratio
        self.baseline = baseline
        self.warned_at: int | None = None

    def check(self, step: int, loss_reca: float) -> str | None:
        """A warning message the first time the collapse threshold is crossed, else None."""
        if self.baseline is None or self.warned_at is not None or self.baseline <= 0:
            return None
        if loss_reca < self.ratio * self.baseline:
            self.warned_at = step
            return (
                f"possible token copying at step {step}: loss_reca {loss_reca:.4f} is below "
                f"{self.ratio:g} x the starting model's {self.baseline:.4f}; the condition may let the generator "
                "copy the image (lower degrade.understanding_size, or raise blur_sigma / lower downup_factor)"
            )
        return None


def peak_memory_mb() -> float:
    """Peak memory in MiB: allocated GPU memory on CUDA, resident set size on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
