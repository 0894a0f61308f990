"""Learnable queries and the connector: the bridge from a frozen VLM to a diffusion transformer.

MetaQuery / OpenUni / BLIP3-o style: ``N`` learnable query embeddings are
appended to the VLM's prompt; the VLM's last hidden states at those positions
summarise the condition; a small transformer (the connector) maps them to the
conditioning sequence the diffusion transformer cross-attends to. Queries and
connector are the adapter's own weights (everything else is a transformers or
diffusers model), saved together in one safetensors file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class ConnectorConfig:
    """Shape of the queries and the connector (written to the adapter's JSON)."""

    num_queries: int
    vlm_hidden_size: int
    output_size: int  # the diffusion transformer's caption_channels
    width: int
    layers: int
    heads: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, int]) -> ConnectorConfig:
        missing = sorted(set(cls.__dataclass_fields__) - set(raw))
        if missing:
            raise ValueError(f"connector config lacks {missing}")
        return cls(**{k: int(raw[k]) for k in cls.__dataclass_fields__})


class LearnableQueries(nn.Module):
    """``N`` query embeddings in the VLM's input space, appended after the prompt."""

    def __init__(self, num_queries: int, hidden_size: int, init_std: float = 0.02) -> None:
        super().__init__()
        # Plain ints: under ZeRO-3 the weight's shape reads (0,) outside this module's forward.
        self.num_queries, self.hidden_size = num_queries, hidden_size
        self.weight = nn.Parameter(torch.randn(num_queries, hidden_size) * init_std)

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.weight.unsqueeze(0).expand(batch_size, -1, -1)


class QueryConnector(nn.Module):
    """Pre-norm transformer encoder from query states (B, N, vlm_hidden) to (B, N, output_size)."""

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__()
        if config.width % config.heads:
            raise ValueError(f"connector width {config.width} is not divisible by its heads {config.heads}")
        self.config = config
        self.proj_in = nn.Linear(config.vlm_hidden_size, config.width)
        # A plain ModuleList rather than nn.TransformerEncoder: the latter warns about
        # nested tensors for pre-norm layers and adds nothing here.
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(config.width, config.heads, 4 * config.width, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.width)
        self.proj_out = nn.Linear(config.width, config.output_size)
        #: recompute each layer in backward (``UMMAdapter.enable_activation_checkpointing``)
        self.activation_checkpointing = False

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(states)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            x = checkpoint(layer, x, use_reentrant=False) if recompute else layer(x)
        return self.proj_out(self.norm(x))
