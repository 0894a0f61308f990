"""Masked image tokens (Show-o, CLIP variant): one transformers LLM, omni-attention, MaskGIT decoding.

Understanding: a CLIP/SigLIP vision model from transformers plus an MLP
projector gives ``h_v``, which fills the image placeholders of the
chat-formatted prompt. Generation: after ``<begin_of_image>`` the same LLM
reads one block of image-token embeddings, some replaced by ``[MASK]``,
attending bidirectionally inside the block (:mod:`reca.models.masked_common`),
and a linear head predicts the masked tokens. The RecA loss is Show-o's own:
cross-entropy on the masked positions, with the masking ratio drawn from the
MaskGIT cosine schedule; inference starts from an all-masked block and
reveals the most confident tokens over ``decoding_steps`` steps.

Image tokens come from a diffusers ``VQModel`` (real checkpoints: Show-o's
MAGVIT VQ converted to diffusers format), or, in the embedded default world
trained from scratch by `sft`, from the patch k-means codebook
(:class:`~reca.models.image_tokenizers.PatchKMeansTokenizer`), which stands in
for a VQ that a laptop could not train.

Saved layout: the LLM and tokenizer at the top (``AutoModelForCausalLM``
loads it), ``understanding_encoder/`` (transformers), ``masked_token_modules/``
and ``vq_model/`` (diffusers), or ``image_tokenizer.safetensors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ModelMixin, VQModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn
from transformers import (
    AutoModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from reca.data.transforms import resize_to
from reca.models import text_tokenizer as tt
from reca.models.base import Condition, LatentConditioned, Sampling
from reca.models.from_scratch import TinyIterativeParams, mlp_projector, tiny_llama
from reca.models.image_tokenizers import ImageTokenizer, PatchKMeansTokenizer
from reca.models.latent_tokenizers import VQModelTokenizer
from reca.models.masked_common import (
    ImageBlockLMAdapter,
    choose_reveal,
    masked_counts,
    sample_training_mask,
)
from reca.models.registration import register
from reca.models.sampling import guided_logits, sample_tokens

ENCODER_DIR = "understanding_encoder"
MODULES_DIR = "masked_token_modules"
VQ_DIR = "vq_model"
#: ``build_from_scratch(image_tokenizer=...)`` values: the default world's codebook, or a random diffusers VQModel
IMAGE_TOKENIZERS = ("patch_kmeans", "vq_model")


class TinyMaskedParams(TinyIterativeParams):
    """Size of the from-scratch masked-token model built for the embedded default world."""


class MaskedTokenModules(ModelMixin, ConfigMixin):
    """Show-o's image-side parts around the LLM: ``h_v`` projector, image-token embeddings, token head."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, understanding_dim: int, hidden_size: int, num_codes: int, num_tokens: int,
                 decoding_steps: int = 8) -> None:
        super().__init__()
        self.projector = mlp_projector(understanding_dim, hidden_size)
        # One extra row: the [MASK] token, id ``num_codes``.
        self.embeddings = nn.Embedding(num_codes + 1, hidden_size)
        self.head = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, num_codes))


@register("showo_masked")
class ShowOMaskedAdapter(ImageBlockLMAdapter, LatentConditioned):
    """Masked image tokens (Show-o): LLM with omni-attention, MaskGIT schedule, CLIP/SigLIP h_v."""

    default_frozen = ("understanding_encoder", "image_tokenizer")
    shares_understanding_parameters = True
    tiny_params = TinyMaskedParams
    image_tokenizers = IMAGE_TOKENIZERS

    def __init__(self, llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, vision: PreTrainedModel,
                 modules: MaskedTokenModules, image_tokenizer: ImageTokenizer) -> None:
        size = int(vision.config.image_size)
        with torch.no_grad():  # CLIP adds a class token, SigLIP does not: ask the encoder itself
            num_understanding = vision(pixel_values=torch.zeros(1, 3, size, size)).last_hidden_state.shape[1]
        super().__init__(llm, tokenizer, num_understanding)
        self.understanding_encoder = vision
        self.token_modules = modules
        self.image_tokenizer = image_tokenizer
        cfg = modules.config
        if image_tokenizer.num_codes != cfg.num_codes or image_tokenizer.num_tokens != cfg.num_tokens:
            raise ValueError(f"image tokenizer gives {image_tokenizer.num_tokens} tokens of {image_tokenizer.num_codes} "
                             f"codes but the token modules expect {cfg.num_tokens} of {cfg.num_codes}")
        if cfg.hidden_size != llm.config.hidden_size:
            raise ValueError(f"token modules are {cfg.hidden_size} wide but the LLM is {llm.config.hidden_size}")
        self.mask_id = cfg.num_codes

    # ----------------------------------------------------------------- loading
    @classmethod
    def build_from_scratch(cls, tiny: TinyMaskedParams, *, texts: Sequence[str], images: torch.Tensor,
                           seed: int = 0, image_tokenizer: str = "patch_kmeans") -> ShowOMaskedAdapter:
        """A random tiny model: word tokenizer, Llama, SigLIP, and a patch codebook fitted on ``images``.

        ``image_tokenizer="vq_model"`` uses a random diffusers ``VQModel`` instead
        (only useful to exercise the real-checkpoint code path).
        """
        cls.require_image_tokenizer(image_tokenizer)
        tokenizer = tt.build_word_tokenizer(texts)
        torch.manual_seed(seed)
        llm = tiny_llama(tiny, tokenizer)
        vision = SiglipVisionModel(SiglipVisionConfig(
            hidden_size=tiny.vision_hidden_size, intermediate_size=4 * tiny.vision_hidden_size,
            num_hidden_layers=tiny.vision_layers, num_attention_heads=tiny.vision_heads,
            image_size=tiny.image_size, patch_size=tiny.vision_patch_size,
            vision_use_head=False,  # only last_hidden_state is used: a pooling head would never get gradients
        ))
        if image_tokenizer == "patch_kmeans":
            tok: ImageTokenizer = PatchKMeansTokenizer.fit(images, num_codes=tiny.codebook_size,
                                                           patch_size=tiny.token_patch_size,
                                                           iters=tiny.kmeans_iters, seed=seed)
        else:
            tok = VQModelTokenizer.tiny(image_size=tiny.image_size, patch_size=tiny.token_patch_size,
                                        num_codes=tiny.codebook_size)
        modules = MaskedTokenModules(understanding_dim=tiny.vision_hidden_size, hidden_size=tiny.hidden_size,
                                     num_codes=tok.num_codes, num_tokens=tok.num_tokens,
                                     decoding_steps=tiny.decoding_steps)
        return cls(llm, tokenizer, vision, modules, tok)

    @classmethod
    def _from_parts(cls, llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path,
                    record: dict[str, Any], *, revision: str | None, trust_remote_code: bool, dtype: torch.dtype
                    ) -> ShowOMaskedAdapter:
        vision = AutoModel.from_pretrained(path, subfolder=ENCODER_DIR, revision=revision,
                                           trust_remote_code=trust_remote_code, dtype=dtype)
        modules = MaskedTokenModules.from_pretrained(path, subfolder=MODULES_DIR, revision=revision,
                                                     low_cpu_mem_usage=True, torch_dtype=dtype)
        if record.get("image_tokenizer", "vq_model") == "patch_kmeans":
            tok: ImageTokenizer = PatchKMeansTokenizer.load(path)
        else:
            tok = VQModelTokenizer(VQModel.from_pretrained(path, subfolder=VQ_DIR, revision=revision,
                                                           low_cpu_mem_usage=True, torch_dtype=dtype))
        return cls(llm, tokenizer, vision, modules, tok)

    def _save_parts(self, directory: Path) -> dict[str, Any]:
        self.understanding_encoder.save_pretrained(directory / ENCODER_DIR, safe_serialization=True)
        self.token_modules.save_pretrained(directory / MODULES_DIR, safe_serialization=True)
        if isinstance(self.image_tokenizer, PatchKMeansTokenizer):
            self.image_tokenizer.save(directory)
            return {"image_tokenizer": "patch_kmeans"}
        self.image_tokenizer.vq.save_pretrained(directory / VQ_DIR, safe_serialization=True)
        return {"image_tokenizer": "vq_model"}

    # ----------------------------------------------------------- understanding
    @property
    def understanding_size(self) -> int:
        return int(self.understanding_encoder.config.image_size)

    @property
    def generation_tokenizer(self) -> ImageTokenizer:
        return self.image_tokenizer

    def understanding_features(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = resize_to(pixels, self.understanding_size).to(self._dtype)
        return self.understanding_encoder(pixel_values=pixels).last_hidden_state

    def understanding_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        return self.token_modules.projector(features.to(self._dtype))

    def latent_condition(self, pixels: torch.Tensor) -> torch.Tensor:
        """The image's VQ codes through the image-token embedding the image block reads."""
        codes = self.image_tokenizer.encode(resize_to(pixels, self.generation_size).to(self._device))
        return self.token_modules.embeddings(codes)

    # ------------------------------------------------------------------ losses
    def _token_logits(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        hidden = self._image_hidden(prefix, prefix_mask, self.token_modules.embeddings(ids))
        return self.token_modules.head(hidden).float()

    def generation_loss(self, condition: Condition, target_pixels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the masked image tokens of the target (MaskGIT cosine masking ratio)."""
        targets = self.image_tokenizer.encode(target_pixels.to(self._device))
        masked = sample_training_mask(*targets.shape, targets.device, self.loss_generator(self._device))
        prefix, prefix_mask = self._prefix(condition)
        logits = self._token_logits(prefix, prefix_mask, targets.masked_fill(masked, self.mask_id))
        return F.cross_entropy(logits[masked], targets[masked])

    # --------------------------------------------------------------- inference
    def sample(self, condition: Condition, sampling: Sampling) -> torch.Tensor:
        """MaskGIT decoding: sample every masked token, keep the most confident, re-mask the rest."""
        n, total = len(condition.texts), self.tokens_per_image
        guided = sampling.guided
        prefix, prefix_mask = self._prefix(sampling.batch(condition))
        ids = torch.full((n, total), self.mask_id, dtype=torch.long, device=self._device)
        still_masked = torch.ones_like(ids, dtype=torch.bool)
        for keep_masked in masked_counts(total, self.token_modules.config.decoding_steps):
            logits = self._token_logits(prefix, prefix_mask, torch.cat([ids, ids]) if guided else ids)
            logits = guided_logits(logits, sampling.guidance_scale) if guided else logits
            flat = logits.reshape(n * total, -1)
            sampled = sample_tokens(flat, temperature=sampling.temperature, generator=sampling.generator)
            confidence = torch.log_softmax(flat, -1).gather(-1, sampled[:, None]).reshape(n, total)
            # MaskGIT's annealed Gumbel noise: early steps explore, the last ones trust the model.
            uniform = torch.rand(confidence.shape, generator=sampling.generator, device=confidence.device)
            gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1 - 1e-7)))
            scores = confidence + sampling.temperature * (keep_masked / total) * gumbel
            reveal = choose_reveal(still_masked, scores, keep_masked)
            ids = torch.where(reveal, sampled.reshape(n, total), ids)
            still_masked &= ~reveal
        return self.image_tokenizer.decode(ids)

    # ------------------------------------------------------------- parameters
    def parts(self) -> dict[str, nn.Module]:
        return {
            "understanding_encoder": self.understanding_encoder,
            "understanding_projector": self.token_modules.projector,
            "image_tokenizer": self.image_tokenizer,
            "generation_embeddings": self.token_modules.embeddings,
            "generation_head": self.token_modules.head,
            "language_model": self.llm,
        }
