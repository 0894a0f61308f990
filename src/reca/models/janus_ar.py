"""Discrete autoregressive UMM (Janus / Janus-Pro) on transformers' ``JanusForConditionalGeneration``.

Understanding: SigLIP-style ``vision_model`` then ``aligner`` gives ``h_v``,
which replaces ``<image_placeholder>`` tokens in the chat-formatted prompt.
Generation: after ``<begin_of_image>`` the language model predicts image
tokens through ``generation_head``; image tokens are fed back through
``prepare_embeddings_for_image_generation``. The transformers ``forward``
computes only the text loss, so the image-token loss is written here from the
model's own modules.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn
from transformers import (
    AutoTokenizer,
    DynamicCache,
    GenerationConfig,
    JanusConfig,
    JanusForConditionalGeneration,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
    PreTrainedTokenizerBase,
)

from reca.data.transforms import resize_to
from reca.fileio import atomic_dir
from reca.models import text_tokenizer as tt
from reca.models.base import Condition, LatentConditioned, Sampling, TextAligned, UMMAdapter
from reca.models.conditioning import (
    ChatPrompter,
    caption_batch,
    next_token_loss,
    pad_rows,
    positions_from_mask,
    splice_image_embeddings,
)
from reca.models.from_scratch import TinyWorldParams
from reca.models.image_tokenizers import ImageTokenizer, JanusVQTokenizer, PatchKMeansTokenizer
from reca.models.registration import ADAPTER_FILE, register, write_adapter_file
from reca.models.sampling import guided_logits, sample_tokens


class TinyJanusParams(TinyWorldParams):
    """Size of the from-scratch Janus built for the embedded default world."""

    @model_validator(mode="after")
    def _check_vq_grid(self) -> TinyJanusParams:
        grid = self.image_size // self.vision_patch_size
        if grid & (grid - 1) or self.vision_patch_size & (self.vision_patch_size - 1):
            raise ValueError("image_size / vision_patch_size and vision_patch_size must be powers of two (VQ grid)")
        return self


def tiny_janus_config(tiny: TinyJanusParams, tokenizer: PreTrainedTokenizerBase) -> JanusConfig:
    """A small ``JanusConfig`` for from-scratch training and tests.

    Janus ties the vision encoder's patch grid to its VQ grid, and every
    projection into the language model has the language model's hidden size.
    The patch tokenizer of the default world has its own, finer grid: fewer
    understanding tokens than generated tokens keeps sequences short on a CPU.
    """
    grid = tiny.image_size // tiny.vision_patch_size
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_heads,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = JanusVisionConfig(
        hidden_size=tiny.vision_hidden_size,
        num_hidden_layers=tiny.vision_layers,
        num_attention_heads=tiny.vision_heads,
        image_size=tiny.image_size,
        patch_size=tiny.vision_patch_size,
        projection_dim=tiny.hidden_size,
        num_image_tokens=grid * grid,
    )
    # The VQ downsamples 2x per channel_multiplier entry after the first, and its
    # grid must equal the vision grid (JanusConfig enforces num_patches).
    levels = int(math.log2(tiny.vision_patch_size))
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=tiny.codebook_size,
        base_channels=32,  # GroupNorm in the VQ blocks needs multiples of 32
        channel_multiplier=[1] * (levels // 2 + 1) + [2] * (levels - levels // 2),
        num_res_blocks=1,
        latent_channels=32,
        projection_dim=tiny.hidden_size,
        image_token_embed_dim=tiny.hidden_size,
        num_patches=grid,
    )
    return JanusConfig(
        text_config=text,
        vision_config=vision,
        vq_config=vq,
        image_token_id=tokenizer.convert_tokens_to_ids(tt.IMAGE_PLACEHOLDER),
    )


@register("janus_ar")
class JanusARAdapter(UMMAdapter, LatentConditioned, TextAligned):
    """RecA adapter for Janus-family models (shared understanding/generation backbone)."""

    default_frozen = ("understanding_encoder", "image_tokenizer")
    shares_understanding_parameters = True
    tiny_params = TinyJanusParams
    image_tokenizers = ("patch_kmeans", "janus_vq")

    def __init__(
        self,
        model: JanusForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        image_tokenizer: ImageTokenizer | None = None,
        *,
        template_source: str = "the word tokenizer's built-in chat template",
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        if image_tokenizer is None:
            image_tokenizer = JanusVQTokenizer(model.model.vqmodel)
        if isinstance(image_tokenizer, PatchKMeansTokenizer):
            self.patch_tokenizer = image_tokenizer  # registered: its codebook moves with .to()
        self._image_tokenizer = image_tokenizer
        if image_tokenizer.num_codes != model.config.vq_config.num_embeddings:
            raise ValueError(
                f"image tokenizer has {image_tokenizer.num_codes} codes but the generation head predicts "
                f"{model.config.vq_config.num_embeddings}"
            )
        ids = tokenizer.convert_tokens_to_ids([tt.BOI, tt.IMAGE_PLACEHOLDER])
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
            raise ValueError(f"tokenizer lacks {tt.BOI} or {tt.IMAGE_PLACEHOLDER}; not a Janus tokenizer")
        self.boi_id, self.image_token_id = ids
        if self.image_token_id != model.config.image_token_id:
            raise ValueError("tokenizer's image placeholder id differs from config.image_token_id")
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.num_understanding_tokens = int(model.config.vision_config.num_image_tokens)
        # A published Janus tokenizer names its image boundary tokens, and its processor wraps every image
        # as <begin_of_image> + placeholders + <end_of_image>: the prompt does the same. The default world's
        # word tokenizer names none and its model was trained on bare placeholders.
        start, end = (getattr(tokenizer, name, None) or "" for name in ("boi_token", "eoi_token"))
        self.prompter = ChatPrompter(tokenizer, image_token=tt.IMAGE_PLACEHOLDER,
                                     num_image_tokens=self.num_understanding_tokens,
                                     image_start=start, image_end=end if start else "",
                                     plain_format=f"{tt.USER}: {{content}}\n\n{tt.ASSISTANT}:",
                                     template_source=template_source)

    # ----------------------------------------------------------------- loading
    @classmethod
    def build_from_scratch(cls, tiny: TinyJanusParams, *, texts: Sequence[str], images: torch.Tensor, seed: int = 0,
                           image_tokenizer: str = "patch_kmeans") -> JanusARAdapter:
        """A randomly initialised tiny Janus with a word tokenizer and a fitted patch codebook.

        ``image_tokenizer="janus_vq"`` keeps the model's own (random, untrained) VQ
        instead; that is only useful to exercise the real-Janus code path in tests.
        """
        tokenizer = tt.build_word_tokenizer(texts)
        torch.manual_seed(seed)
        model = JanusForConditionalGeneration(tiny_janus_config(tiny, tokenizer))
        if image_tokenizer == "janus_vq":
            return cls(model, tokenizer)
        patch = PatchKMeansTokenizer.fit(
            images,
            num_codes=tiny.codebook_size,
            patch_size=tiny.token_patch_size,
            iters=tiny.kmeans_iters,
            seed=seed,
        )
        return cls(model, tokenizer, patch)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, revision: str | None = None, trust_remote_code: bool = False,
        dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa",
    ) -> JanusARAdapter:
        model = JanusForConditionalGeneration.from_pretrained(
            path, revision=revision, trust_remote_code=trust_remote_code, dtype=dtype,
            attn_implementation=attn_implementation,
        )
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
        marker = Path(path, ADAPTER_FILE)
        kind = json.loads(marker.read_text()).get("image_tokenizer", "janus_vq") if marker.exists() else "janus_vq"
        image_tokenizer = PatchKMeansTokenizer.load(path) if kind == "patch_kmeans" else None
        template = Path(path, "chat_template.jinja")
        source = str(template) if template.exists() else f"the chat template of {path}"
        return cls(model, tokenizer, image_tokenizer, template_source=source)

    def save_pretrained(self, path: str | Path) -> None:
        with atomic_dir(path) as tmp:
            self.model.generation_config = self._generation_config()
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            kind = "janus_vq"
            if isinstance(self._image_tokenizer, PatchKMeansTokenizer):
                self._image_tokenizer.save(tmp)
                kind = "patch_kmeans"
            write_adapter_file(tmp, self.name, image_tokenizer=kind)

    def _generation_config(self) -> GenerationConfig:
        # Lets transformers' own ``generate(generation_mode="image")`` run on saved models too.
        return GenerationConfig(
            bos_token_id=self.bos_id,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            do_sample=True,
            generation_kwargs={"boi_token_id": self.boi_id},
        )

    # ----------------------------------------------------------- understanding
    @property
    def understanding_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def generation_tokenizer(self) -> ImageTokenizer:
        return self._image_tokenizer

    def understanding_features(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = resize_to(pixels, self.understanding_size).to(self._dtype)
        return self.model.model.vision_model(pixel_values=pixels).last_hidden_state

    def understanding_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.model.aligner(features.to(self._dtype))

    def latent_condition(self, pixels: torch.Tensor) -> torch.Tensor:
        """The image's VQ codes through the generation embedding and aligner: what generated tokens feed back."""
        codes = self._image_tokenizer.encode(resize_to(pixels, self.generation_size))
        return self.model.prepare_embeddings_for_image_generation(codes)

    def pooled_text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        rows = [self.tokenizer(text, add_special_tokens=False).input_ids or [self.pad_id] for text in texts]
        padded, mask = pad_rows(rows, self.pad_id, self.model.device, side="right")
        embeds = self.model.get_input_embeddings()(padded)
        weights = mask.unsqueeze(-1).to(embeds.dtype)
        return (embeds * weights).sum(dim=1) / weights.sum(dim=1)

    def condition_states(self, condition: Condition) -> torch.Tensor:
        out = self._lm_outputs(*self._condition_prefix(condition), output_hidden_states=True)
        # hidden_states[0] is <begin_of_image>'s own input embedding: the same for every condition.
        return torch.stack([h[:, -1] for h in out.hidden_states[1:]], dim=1)

    @property
    def _dtype(self) -> torch.dtype:
        return self.model.model.language_model.embed_tokens.weight.dtype

    # --------------------------------------------------------- prompt building
    def _embed(self, ids: torch.Tensor, image_embeddings: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with ``h_v`` scattered into the placeholder positions."""
        embeds = self.model.get_input_embeddings()(ids)
        return splice_image_embeddings(embeds, ids, self.image_token_id, image_embeddings)

    def _condition_prefix(self, condition: Condition) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prefix embeddings ending in ``<begin_of_image>``, and their attention mask.

        A dropped condition keeps its length but every token except the first
        (BOS) and the last (BOI) becomes padding, which is exactly the
        unconditional prompt that transformers' Janus ``generate`` builds for
        classifier-free guidance.
        """
        with_image = condition.image_embeddings is not None
        # h_v fills the encoder's token count; a latent condition fills as many slots as it has tokens.
        image_tokens = condition.image_embeddings.shape[1] if with_image else 0
        drop = condition.drop if condition.drop is not None else torch.zeros(len(condition.texts), dtype=torch.bool)
        rows = []
        for text, dropped in zip(condition.texts, drop.tolist(), strict=True):
            ids = [*self.prompter.ids(text, image_tokens), self.boi_id]
            if dropped:  # as transformers' Janus builds its unconditional prompt: all but the first and last
                ids = [ids[0], *[self.pad_id] * (len(ids) - 2), ids[-1]]
            rows.append(ids)
        device = self.model.device
        ids, mask = pad_rows(rows, self.pad_id, device)
        image_embeddings = None
        if with_image:
            keep = ~drop.to(device)
            image_embeddings = condition.image_embeddings[keep]
        return self._embed(ids, image_embeddings), mask

    def _lm_outputs(self, embeds: torch.Tensor, mask: torch.Tensor, cache: DynamicCache | None = None,
                    positions: torch.Tensor | None = None, output_hidden_states: bool = False) -> Any:
        if positions is None:
            positions = positions_from_mask(mask)
        return self.model.model.language_model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=cache is not None,
            output_hidden_states=output_hidden_states,
        )

    def _run_lm(self, embeds: torch.Tensor, mask: torch.Tensor, cache: DynamicCache | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        return self._lm_outputs(embeds, mask, cache, positions).last_hidden_state

    # ------------------------------------------------------------------ losses
    def generation_loss(self, condition: Condition, target_pixels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the VQ tokens of the target, teacher-forced after the condition."""
        targets = self._image_tokenizer.encode(target_pixels)
        prefix, mask = self._condition_prefix(condition)
        image_embeds = self.model.prepare_embeddings_for_image_generation(targets[:, :-1])
        embeds = torch.cat([prefix, image_embeds], dim=1)
        mask = torch.cat([mask, torch.ones_like(targets[:, :-1])], dim=1)
        hidden = self._run_lm(embeds, mask)[:, prefix.shape[1] - 1 :]
        logits = self.model.model.generation_head(hidden)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))

    def i2t_loss(self, pixels: torch.Tensor, instructions: Sequence[str], captions: Sequence[str]) -> torch.Tensor:
        """Captioning loss: next-token cross-entropy on the caption after [image + instruction]."""
        # Right-padded, as Janus's processor pads a training batch.
        ids, mask, labels = caption_batch(self.prompter, instructions, captions, self.pad_id, self.model.device,
                                          side="right")
        hidden = self._run_lm(self._embed(ids, self.embed_images(pixels)), mask)
        return next_token_loss(self.model.lm_head, hidden, labels)

    # --------------------------------------------------------------- inference
    def sample(self, condition: Condition, sampling: Sampling) -> torch.Tensor:
        guided = sampling.guided
        embeds, mask = self._condition_prefix(sampling.batch(condition))
        cache = DynamicCache(config=self.model.config.text_config)
        positions = positions_from_mask(mask)
        hidden = self._run_lm(embeds, mask, cache, positions)[:, -1]
        next_pos = positions[:, -1:] + 1
        tokens = []
        for i in range(self._image_tokenizer.num_tokens):
            logits = self.model.model.generation_head(hidden).float()
            logits = guided_logits(logits, sampling.guidance_scale) if guided else logits
            tok = sample_tokens(logits, temperature=sampling.temperature, generator=sampling.generator)
            tokens.append(tok)
            if i == self._image_tokenizer.num_tokens - 1:
                break
            fed = torch.cat([tok, tok]) if guided else tok
            step = self.model.prepare_embeddings_for_image_generation(fed.unsqueeze(-1))
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            hidden = self._run_lm(step, mask, cache, next_pos)[:, -1]
            next_pos = next_pos + 1
        return self._image_tokenizer.decode(torch.stack(tokens, dim=1))

    # ------------------------------------------------------------- parameters
    def parts(self) -> dict[str, nn.Module]:
        m = self.model.model
        return {
            "understanding_encoder": m.vision_model,
            "understanding_projector": m.aligner,
            "image_tokenizer": m.vqmodel,
            "generation_embeddings": m.generation_embeddings,
            "generation_aligner": m.generation_aligner,
            "generation_head": m.generation_head,
            "language_model": m.language_model,
        }
