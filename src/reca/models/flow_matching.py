"""Continuous flow-matching UMM (OpenUni / MetaQuery / BLIP3-o style) behind the adapter protocol.

A transformers VLM (Qwen2.5-VL) reads ``[chat template + h_v]`` or
``[prompt]`` followed by ``N`` learnable query tokens; a connector maps the
query states to the conditioning sequence of a diffusers transformer (SANA or
PixArt), which is trained by flow matching on VAE latents and sampled with the
``FlowMatchEulerDiscreteScheduler`` under classifier-free guidance.

* ``h_v`` comes from the VLM's own vision tower and merger (frozen during
  RecA, so the `embed` stage caches it).
* Freezing policy of the paper (``default_frozen``): VLM and VAE frozen,
  queries + connector + transformer trained, ``λ_i2t = 0``. The captioning
  loss needs a trainable VLM: it raises, naming ``lambda_i2t``, when every VLM
  parameter is frozen. The embedded default world trains its VLM from scratch
  in `sft` (captioning teaches it to read images) and keeps its language model
  trainable in `train` (the default ``train.freeze`` names only the vision
  tower and the latent space), exactly as the Janus default does.
* The default world generates in a fixed patch latent space
  (:mod:`reca.models.latent_tokenizers`); real checkpoints bring a VAE.

Directory layout (``save_pretrained`` / ``from_pretrained``)::

    reca_adapter.json    adapter name, connector and latent-space description, sizes
    model.safetensors    the adapter's own weights: queries and connector
    vlm/                 transformers Qwen2.5-VL + tokenizer
    transformer/         diffusers SanaTransformer2DModel or PixArtTransformer2DModel
    scheduler/           diffusers FlowMatchEulerDiscreteScheduler
    vae/                 diffusers AutoencoderKL or AutoencoderDC (absent in patch space)

A directory assembled from real parts (a Qwen2.5-VL in ``vlm/``, a SANA
pipeline's ``transformer/``, ``scheduler/`` and ``vae/``) plus a
``reca_adapter.json`` loads too; without ``model.safetensors`` the queries and
connector start from fresh random weights (a warning says so).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.models.modeling_utils import ModelMixin
from pydantic import Field, model_validator
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen2_5_VLForConditionalGeneration

from reca.fileio import atomic_dir
from reca.models import qwen_vl
from reca.models import text_tokenizer as tt
from reca.models.base import Condition, Sampling, UMMAdapter
from reca.models.conditioning import (
    ChatPrompter,
    caption_batch,
    effective_rows,
    next_token_loss,
    pad_rows,
    splice_image_embeddings,
)
from reca.models.flow_transformer import (
    FlowMatching,
    caption_channels,
    load_transformer,
    predict_velocity,
    tiny_transformer,
)
from reca.models.from_scratch import TinyIterativeParams
from reca.models.latent_tokenizers import (
    AutoencoderKLTokenizer,
    LatentTokenizer,
    PatchLatents,
    load_latents,
    save_latents,
    tiny_autoencoder_dc,
    to_grid,
    to_tokens,
)
from reca.models.query_connector import ConnectorConfig, LearnableQueries, QueryConnector
from reca.models.registration import ADAPTER_FILE, register, write_adapter_file

log = logging.getLogger(__name__)

#: the adapter's own weights (queries + connector), at the top level where stages digest a model directory
WEIGHTS_FILE = "model.safetensors"
VLM_DIR, TRANSFORMER_DIR, SCHEDULER_DIR = "vlm", "transformer", "scheduler"
#: ``build_from_scratch(image_tokenizer=...)`` values: the latent space of a from-scratch model
IMAGE_TOKENIZERS = ("patch_latents", "patch_kmeans", "autoencoder_kl", "autoencoder_dc")


class TinyFlowParams(TinyIterativeParams):
    """Size of the from-scratch flow-matching UMM built for the embedded default world.

    The shared keys size the VLM (``hidden_size`` ... ``intermediate_size``: its
    language model; ``vision_*``: its vision tower, whose 2x2 merger makes one
    ``h_v`` token per ``vision_patch_size`` pixels), ``token_patch_size`` is
    the side in pixels of one latent cell and ``decoding_steps`` the Euler steps
    of sampling.
    """

    num_queries: int = Field(16, ge=1, description="Learnable query tokens read by the connector.")
    connector_layers: int = Field(2, ge=0)
    connector_width: int = Field(128, ge=8)
    connector_heads: int = Field(4, ge=1)
    transformer: Literal["sana", "pixart"] = Field("sana", description="diffusers denoiser class.")
    transformer_layers: int = Field(4, ge=1)
    transformer_heads: int = Field(4, ge=1)
    transformer_head_dim: int = Field(32, ge=8)
    transformer_patch_size: int = Field(1, ge=1, description="Latent cells per transformer token side.")
    flow_shift: float = Field(1.0, gt=0.0, description="Scheduler time shift (SANA uses >1 at high resolution).")

    @model_validator(mode="after")
    def _check_qwen_shapes(self) -> TinyFlowParams:
        if (self.hidden_size // self.num_heads) % 8:
            raise ValueError("hidden_size / num_heads must be a multiple of 8 (Qwen2.5-VL's mrope sections)")
        if (self.vision_hidden_size // self.vision_heads) % 4:
            raise ValueError("vision_hidden_size / vision_heads must be a multiple of 4 (2-D rotary)")
        if self.vision_patch_size % 2:
            raise ValueError("vision_patch_size must be even: Qwen2.5-VL merges 2x2 patches into one h_v token")
        if self.connector_width % self.connector_heads:
            raise ValueError("connector_width must be divisible by connector_heads")
        return self


def _local_dir(path: str | Path, revision: str | None) -> Path:
    if Path(path).is_dir():
        return Path(path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path), revision=revision))


def _read_meta(root: Path) -> dict[str, Any]:
    marker = root / ADAPTER_FILE
    if not marker.exists():
        raise FileNotFoundError(
            f"{marker} not found: a flow_matching directory needs it to describe the connector "
            '(e.g. {"adapter": "flow_matching", "connector": {"num_queries": 256, "vlm_hidden_size": ..., '
            '"output_size": <transformer caption_channels>, "width": ..., "layers": ..., "heads": ...}, '
            '"latents": {"type": "vae", "image_size": 512}, "understanding_size": 448, "sampling_steps": 20})'
        )
    return json.loads(marker.read_text())


def _pixel_stats(root: Path, meta: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if "pixel_mean" in meta:
        return tuple(meta["pixel_mean"]), tuple(meta["pixel_std"])
    processor = root / VLM_DIR / "preprocessor_config.json"
    if processor.exists():
        cfg = json.loads(processor.read_text())
        return tuple(cfg.get("image_mean", qwen_vl.DEFAULT_PIXEL_MEAN)), tuple(cfg.get("image_std",
                                                                                       qwen_vl.DEFAULT_PIXEL_STD))
    return qwen_vl.DEFAULT_PIXEL_MEAN, qwen_vl.DEFAULT_PIXEL_STD


@register("flow_matching")
class FlowMatchingAdapter(UMMAdapter):
    """RecA adapter for VLM + learnable queries + connector + diffusion transformer over latents."""

    default_frozen = ("understanding_encoder", "language_model", "lm_head", "image_tokenizer")
    shares_understanding_parameters = False
    tiny_params = TinyFlowParams
    image_tokenizers = IMAGE_TOKENIZERS

    def __init__(
        self,
        vlm: Qwen2_5_VLForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        queries: LearnableQueries,
        connector: QueryConnector,
        transformer: ModelMixin,
        latents: LatentTokenizer,
        scheduler: FlowMatchEulerDiscreteScheduler,
        *,
        understanding_size: int,
        sampling_steps: int = 20,
        pixel_mean: Sequence[float] = qwen_vl.DEFAULT_PIXEL_MEAN,
        pixel_std: Sequence[float] = qwen_vl.DEFAULT_PIXEL_STD,
    ) -> None:
        super().__init__()
        self.vlm = vlm
        self.tokenizer = tokenizer
        self.queries = queries
        self.connector = connector
        self.transformer = transformer
        self.latents = latents
        self.flow = FlowMatching(scheduler)
        self._understanding_size = understanding_size
        self.sampling_steps = sampling_steps
        self.pixel_mean, self.pixel_std = tuple(pixel_mean), tuple(pixel_std)
        hidden = vlm.config.text_config.hidden_size
        if (queries.num_queries, queries.hidden_size) != (connector.config.num_queries,
                                                          connector.config.vlm_hidden_size):
            raise ValueError(f"queries are {queries.num_queries} x {queries.hidden_size} but the connector was "
                             f"built for {connector.config.num_queries} x {connector.config.vlm_hidden_size}")
        if queries.hidden_size != hidden:
            raise ValueError(f"queries have width {queries.hidden_size} but the VLM's hidden size is {hidden}")
        if connector.proj_out.out_features != caption_channels(transformer):
            raise ValueError(f"connector outputs {connector.proj_out.out_features} channels but the transformer "
                             f"reads caption_channels={caption_channels(transformer)}")
        if transformer.config.in_channels != latents.token_dim:
            raise ValueError(f"transformer in_channels={transformer.config.in_channels} but the latent space has "
                             f"{latents.token_dim} channels")
        if latents.grid % transformer.config.patch_size:
            raise ValueError(f"latent grid {latents.grid} is not divisible by the transformer's patch size "
                             f"{transformer.config.patch_size}")
        start, image_token, end = qwen_vl.image_block_tokens(tokenizer, vlm.config)
        self.prompter = ChatPrompter(tokenizer, image_token=image_token, image_start=start, image_end=end,
                                     num_image_tokens=qwen_vl.num_image_tokens(vlm.config, understanding_size))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # ----------------------------------------------------------------- loading
    @classmethod
    def build_from_scratch(cls, tiny: TinyFlowParams, *, texts: Sequence[str], images: torch.Tensor, seed: int = 0,
                           image_tokenizer: str = "patch_kmeans") -> FlowMatchingAdapter:
        """A random-weight tiny Qwen2.5-VL + queries + connector + SANA/PixArt over a latent space.

        ``images`` fix the generation size (their side), ``texts`` the word
        vocabulary. ``image_tokenizer`` picks the latent space: the fixed patch
        latents of the default world (``patch_latents``, or ``patch_kmeans``,
        the default world's name for its stand-in tokenizer), or a random-weight
        ``autoencoder_kl`` / ``autoencoder_dc``, which exercise the
        real-checkpoint code path but cannot decode usefully untrained.
        """
        image_tokenizer = image_tokenizer or "patch_kmeans"
        cls.require_image_tokenizer(image_tokenizer)
        generation_size = int(images.shape[-1])
        if generation_size % (tiny.token_patch_size * tiny.transformer_patch_size):
            raise ValueError(f"generation size {generation_size} is not divisible by token_patch_size x "
                             f"transformer_patch_size ({tiny.token_patch_size} x {tiny.transformer_patch_size})")
        tokenizer = tt.build_word_tokenizer(texts)
        torch.manual_seed(seed)
        vlm = Qwen2_5_VLForConditionalGeneration(qwen_vl.tiny_qwen_vl_config(
            tokenizer, hidden_size=tiny.hidden_size, num_layers=tiny.num_layers, num_heads=tiny.num_heads,
            intermediate_size=tiny.intermediate_size, vision_hidden_size=tiny.vision_hidden_size,
            vision_layers=tiny.vision_layers, vision_heads=tiny.vision_heads, image_size=tiny.image_size,
            patch_size=tiny.vision_patch_size // 2))
        latents = _tiny_latents(image_tokenizer, generation_size, tiny.token_patch_size)
        inner = tiny.transformer_heads * tiny.transformer_head_dim
        transformer = tiny_transformer(
            tiny.transformer, in_channels=latents.token_dim, sample_size=latents.grid,
            patch_size=tiny.transformer_patch_size, layers=tiny.transformer_layers, heads=tiny.transformer_heads,
            head_dim=tiny.transformer_head_dim, caption_channels=inner)
        config = ConnectorConfig(num_queries=tiny.num_queries, vlm_hidden_size=tiny.hidden_size, output_size=inner,
                                 width=tiny.connector_width, layers=tiny.connector_layers, heads=tiny.connector_heads)
        queries, connector = _fresh_bridge(config, vlm)
        return cls(vlm, tokenizer, queries, connector, transformer, latents,
                   FlowMatchEulerDiscreteScheduler(shift=tiny.flow_shift), understanding_size=tiny.image_size,
                   sampling_steps=tiny.decoding_steps)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, revision: str | None = None, trust_remote_code: bool = False,
        dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa",
    ) -> FlowMatchingAdapter:
        root = _local_dir(path, revision)
        meta = _read_meta(root)
        vlm = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            root / VLM_DIR, dtype=dtype, trust_remote_code=trust_remote_code, attn_implementation=attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(root / VLM_DIR, trust_remote_code=trust_remote_code)
        transformer = load_transformer(root / TRANSFORMER_DIR, dtype)
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(root / SCHEDULER_DIR)
        latents = load_latents(root, meta["latents"], dtype)
        config = ConnectorConfig.from_dict(meta["connector"])
        queries, connector = (part.to(dtype) for part in _fresh_bridge(config, vlm))
        weights = root / WEIGHTS_FILE
        if weights.exists():
            state = load_file(str(weights))
            queries.load_state_dict({k.removeprefix("queries."): v for k, v in state.items()
                                     if k.startswith("queries.")})
            connector.load_state_dict({k.removeprefix("connector."): v for k, v in state.items()
                                       if k.startswith("connector.")})
        else:
            log.warning("%s not found: queries and connector start from fresh random weights", weights)
        mean, std = _pixel_stats(root, meta)
        return cls(vlm, tokenizer, queries, connector, transformer, latents, scheduler,
                   understanding_size=int(meta["understanding_size"]),
                   sampling_steps=int(meta.get("sampling_steps", 20)), pixel_mean=mean, pixel_std=std)

    def save_pretrained(self, path: str | Path) -> None:
        with atomic_dir(path) as tmp:
            self.vlm.save_pretrained(tmp / VLM_DIR, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp / VLM_DIR)
            self.transformer.save_pretrained(tmp / TRANSFORMER_DIR, safe_serialization=True)
            self.flow.scheduler.save_pretrained(tmp / SCHEDULER_DIR)
            latents = save_latents(self.latents, tmp)
            state = {**{f"queries.{k}": v for k, v in self.queries.state_dict().items()},
                     **{f"connector.{k}": v for k, v in self.connector.state_dict().items()}}
            save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp / WEIGHTS_FILE))
            write_adapter_file(
                tmp, self.name, connector=self.connector.config.to_dict(), latents=latents,
                understanding_size=self._understanding_size, sampling_steps=self.sampling_steps,
                pixel_mean=list(self.pixel_mean), pixel_std=list(self.pixel_std))

    # ----------------------------------------------------------- understanding
    @property
    def understanding_size(self) -> int:
        return self._understanding_size

    @property
    def generation_tokenizer(self) -> LatentTokenizer:
        return self.latents

    @property
    def tokens_per_image(self) -> int:
        """Transformer tokens per image: the latent grid in the diffusion transformer's patches."""
        return (self.latents.grid // self.transformer.config.patch_size) ** 2

    def understanding_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return qwen_vl.image_features(self.vlm, pixels.to(self._device), self._understanding_size,
                                      self.pixel_mean, self.pixel_std)

    def understanding_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        # Qwen2.5-VL's merger (its projector) is part of the vision tower, so the
        # cached features are already in the language model's input space.
        return features.to(device=self._device, dtype=self.vlm.dtype)

    @property
    def _device(self) -> torch.device:
        return self.queries.weight.device

    # ------------------------------------------------------------- condition
    def _read(self, ids: torch.Tensor, mask: torch.Tensor, h_v: torch.Tensor | None,
              tail: torch.Tensor | None = None) -> torch.Tensor:
        """VLM hidden states of a left-padded batch, ``h_v`` spliced in, the last positions replaced by ``tail``."""
        embeds = splice_image_embeddings(self.vlm.get_input_embeddings()(ids), ids, self.vlm.config.image_token_id,
                                         h_v)
        if tail is not None:
            embeds = torch.cat([embeds[:, : -tail.shape[1]], tail.to(embeds.dtype)], dim=1)
        positions = qwen_vl.mrope_positions(self.vlm, ids, mask, self._understanding_size)
        return qwen_vl.run_language_model(self.vlm, embeds, mask, positions)

    def condition_states(self, condition: Condition) -> torch.Tensor:
        """The transformer's conditioning sequence (B, N, caption_channels) for a condition."""
        rows, h_v = effective_rows(condition)
        n = self.queries.num_queries
        ids, mask = pad_rows([[*self.prompter.ids(r.text, r.image_tokens), *[self.pad_id] * n] for r in rows],
                             self.pad_id, self._device)
        hidden = self._read(ids, mask, h_v, tail=self.queries(len(rows)))
        return self.connector(hidden[:, -n:])

    # ------------------------------------------------------------------ losses
    def generation_loss(self, condition: Condition, target_pixels: torch.Tensor) -> torch.Tensor:
        """Flow-matching (velocity MSE) loss on the target's latents, given the condition."""
        size = self.generation_size
        if tuple(target_pixels.shape[-2:]) != (size, size):
            raise ValueError(f"targets are {tuple(target_pixels.shape[-2:])} but this model generates {size}px: "
                             f"set degrade.generation_size: {size}")
        states = self.condition_states(condition)
        clean = to_grid(self.latents.encode(target_pixels.to(self._device)), self.latents.grid)
        # Training draws noise and times from the global RNG; eval mode uses fixed ones (comparable losses).
        generator = self.loss_generator()
        noisy, timesteps, target = self.flow.training_pair(clean, generator)
        return F.mse_loss(predict_velocity(self.transformer, noisy, timesteps, states), target)

    def i2t_loss(self, pixels: torch.Tensor, instructions: Sequence[str], captions: Sequence[str]) -> torch.Tensor:
        """Captioning loss of the VLM: next-token cross-entropy on the caption after [image + instruction]."""
        if torch.is_grad_enabled() and not any(p.requires_grad for p in self.vlm.parameters()):
            raise ValueError(
                "flow_matching: the captioning (i2t) loss was requested but every VLM parameter is frozen, so it "
                "would train nothing. This adapter is decoupled: the paper freezes its VLM and uses lambda_i2t = 0. "
                "Set train.lambda_i2t: 0 (sft.lambda_i2t in `sft`), or remove understanding_encoder, "
                "language_model and lm_head from the stage's freeze list.")
        ids, mask, labels = caption_batch(self.prompter, instructions, captions, self.pad_id, self._device)
        hidden = self._read(ids, mask, self.embed_images(pixels))
        return next_token_loss(self.vlm.lm_head, hidden, labels)

    # --------------------------------------------------------------- inference
    def sample(self, condition: Condition, sampling: Sampling) -> torch.Tensor:
        states = self.condition_states(sampling.batch(condition))
        shape = (len(condition.texts), self.latents.token_dim, self.latents.grid, self.latents.grid)
        latents = self.flow.sample(lambda x, t: predict_velocity(self.transformer, x, t, states), shape,
                                   steps=self.sampling_steps, guidance_scale=sampling.guidance_scale,
                                   temperature=sampling.temperature, generator=sampling.generator, device=self._device)
        return self.latents.decode(to_tokens(latents)).clamp(-1, 1)

    # ------------------------------------------------------------- parameters
    def parts(self) -> dict[str, nn.Module]:
        return {
            "understanding_encoder": self.vlm.model.visual,
            "language_model": self.vlm.model.language_model,
            "lm_head": self.vlm.lm_head,
            "queries": self.queries,
            "connector": self.connector,
            "diffusion_transformer": self.transformer,
            "image_tokenizer": self.latents,
        }


def _fresh_bridge(config: ConnectorConfig, vlm: Qwen2_5_VLForConditionalGeneration
                  ) -> tuple[LearnableQueries, QueryConnector]:
    # Queries start at the scale of the VLM's own token embeddings, so the frozen VLM reads them as tokens.
    init_std = float(vlm.get_input_embeddings().weight.detach().float().std())
    return LearnableQueries(config.num_queries, config.vlm_hidden_size, init_std), QueryConnector(config)


def _tiny_latents(kind: str, image_size: int, cell: int) -> LatentTokenizer:
    if kind == "autoencoder_kl":
        return AutoencoderKLTokenizer.tiny(image_size=image_size, downsample=cell)
    if kind == "autoencoder_dc":
        return tiny_autoencoder_dc(image_size=image_size, downsample=cell)
    return PatchLatents(image_size, cell)
