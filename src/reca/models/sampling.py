"""Token sampling shared by every discrete generation branch."""

from __future__ import annotations

import torch


def guided_logits(logits: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance on a batch stacked as [conditional; unconditional].

    ``guidance_scale == 1`` returns the conditional half unchanged.
    """
    cond, uncond = logits.chunk(2, dim=0)
    if guidance_scale == 1.0:
        return cond
    return uncond + guidance_scale * (cond - uncond)


def sample_tokens(
    logits: torch.Tensor, *, temperature: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sample one token per row of ``logits`` (B, K) at ``temperature`` (0 = argmax)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
