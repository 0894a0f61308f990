"""Published configurations of the paper's systems, for random-weight stand-ins at their real widths.

No weights can be downloaded on the machines this is built on, so real sizes
are exercised with random weights in the published layout: the same config
classes, widths, token counts and file names as the authors' checkpoints,
with the depth (and, where memory requires, the text vocabulary) cut by the
caller. ``benchmarks/bench_real_size.py`` measures them; ``scripts/
janus_pro_stand_in.py`` writes a transformers-format directory that
``model.pretrained`` loads, to run the pipeline at real widths.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

from reca.models import text_tokenizer as tt


@dataclass(frozen=True)
class PublishedJanus:
    """A published Janus-Pro size. Vision tower and VQ are the same for every size: SigLIP-L at 384 px,
    patch 16 (576 tokens); a VQ of 16384 codes of dimension 8 with 16x16 downsampling (576 tokens)."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int = 102400
    vision_hidden: int = 1024
    vision_layers: int = 24
    vision_heads: int = 16
    image_size: int = 384
    patch: int = 16

    def config(self, tokenizer, *, layers: int | None = None, vocab: int | None = None) -> JanusConfig:  # noqa: ANN001
        """The ``JanusConfig``, with ``layers`` decoder and vision layers and a ``vocab``-word head if given.

        The word tokenizer's ids are a subset of the vocabulary; the published
        checkpoints do not tie ``lm_head`` to the input embedding, and every
        projection into the language model has its hidden size.
        """
        text = LlamaConfig(
            vocab_size=vocab or self.vocab, hidden_size=self.hidden, intermediate_size=self.intermediate,
            num_hidden_layers=layers or self.layers, num_attention_heads=self.heads,
            num_key_value_heads=self.heads, max_position_embeddings=16384, tie_word_embeddings=False,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        grid = self.image_size // self.patch
        vision = JanusVisionConfig(
            hidden_size=self.vision_hidden, num_hidden_layers=layers or self.vision_layers,
            num_attention_heads=self.vision_heads, mlp_ratio=4.0, image_size=self.image_size,
            patch_size=self.patch, projection_dim=self.hidden, num_image_tokens=grid * grid,
        )
        # transformers' defaults are the published VQ (codebook 16384, dim 8, 5 levels = 16x downsampling).
        vq = JanusVQVAEConfig(projection_dim=self.hidden, image_token_embed_dim=self.hidden, num_patches=grid)
        return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, tie_word_embeddings=False,
                           image_token_id=tokenizer.convert_tokens_to_ids(tt.IMAGE_PLACEHOLDER))


PUBLISHED_JANUS = {
    "janus-pro-1b": PublishedJanus(hidden=2048, layers=24, heads=16, intermediate=5504),
    "janus-pro-7b": PublishedJanus(hidden=4096, layers=30, heads=32, intermediate=11008),
}
