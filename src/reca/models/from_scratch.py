"""Building blocks of the models built from scratch for the embedded default world.

Real checkpoints bring their own sizes; a model trained from scratch on the
synthetic world is sized by ``model.tiny`` in params.yaml. Every adapter's
schema of that section starts from :class:`TinyWorldParams`, so the default
world runs with any adapter by changing ``model.adapter`` alone; the tiny
Llama and the MLP projector are the parts several adapters build.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from reca.schema import Section


class TinyWorldParams(Section):
    """Sizes every adapter's from-scratch model shares (the key names of the default ``model.tiny``)."""

    hidden_size: int = Field(128, ge=8, description="Language-model width.")
    num_layers: int = Field(4, ge=1, description="Language-model layers.")
    num_heads: int = Field(4, ge=1, description="Language-model attention heads.")
    intermediate_size: int = Field(344, ge=8, description="Language-model MLP width.")
    vision_hidden_size: int = Field(64, ge=8, description="Understanding-encoder width.")
    vision_layers: int = Field(2, ge=1, description="Understanding-encoder layers.")
    vision_heads: int = Field(4, ge=1, description="Understanding-encoder attention heads.")
    image_size: int = Field(32, ge=8, description="Image side; must equal degrade.understanding_size.")
    vision_patch_size: int = Field(8, ge=1, description="Pixels per h_v token side: (image_size/patch)^2 tokens.")
    token_patch_size: int = Field(4, ge=1, description="Pixels per generated-token side.")
    codebook_size: int = Field(
        1024, ge=2, description="Codes of the k-means patch codebook (discrete-token adapters; continuous ones "
        "ignore it).")
    kmeans_iters: int = Field(15, ge=1, description="Lloyd iterations when fitting the patch codebook.")

    @model_validator(mode="after")
    def _check_sizes(self) -> TinyWorldParams:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        if self.vision_hidden_size % self.vision_heads:
            raise ValueError(f"vision_hidden_size ({self.vision_hidden_size}) must be divisible by vision_heads "
                             f"({self.vision_heads})")
        for key in ("vision_patch_size", "token_patch_size"):
            if self.image_size % getattr(self, key):
                raise ValueError(f"image_size ({self.image_size}) must be divisible by {key} ({getattr(self, key)})")
        return self


class TinyIterativeParams(TinyWorldParams):
    """Sizes of the from-scratch models that decode iteratively (masked tokens, MAR, flow matching)."""

    decoding_steps: int = Field(8, ge=1, description="Iterative decoding steps at generation (MaskGIT / MAR).")


def tiny_llama(tiny: TinyWorldParams, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A randomly initialised Llama sized by ``tiny``, with the tokenizer's vocabulary and special ids."""
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=tiny.hidden_size, intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_layers, num_attention_heads=tiny.num_heads, num_key_value_heads=tiny.num_heads,
        max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation="sdpa",  # the bidirectional image block needs a kernel that takes a 4D mask
    ))


def mlp_projector(in_dim: int, out_dim: int) -> nn.Sequential:
    """The two-layer GELU MLP that maps encoder features into the language model's input space."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
