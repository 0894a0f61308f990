"""Qwen2.5-VL as the understanding side of the flow-matching adapter (transformers).

The adapter needs three things from the VLM, and this module gives them
without its processor (which wants PIL images, not batched tensors):

* :func:`image_features`: ``h_v`` from the VLM's own vision tower and merger,
  for a batch of same-sized pixel tensors in [-1, 1]. Pixels are cut into the
  flat patch layout of ``Qwen2VLImageProcessor`` (checked against it in the
  tests) so a real checkpoint sees what it was trained on.
* :func:`mrope_positions`: the 3-D rotary positions of a left-padded batch,
  from the model's own ``get_rope_index``; the language model needs them for
  the image block to read as an image grid.
* :func:`tiny_qwen_vl_config`: a small random-weight configuration for the
  embedded default world and the tests (the word tokenizer of
  :mod:`reca.models.text_tokenizer` plus a video placeholder, ``mrope_section``
  summing to half the head dimension).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from reca.data.transforms import resize_to
from reca.models import text_tokenizer as tt

#: pixel normalisation of Qwen2-VL / Qwen2.5-VL image processors (used when a checkpoint names none)
DEFAULT_PIXEL_MEAN = tuple(OPENAI_CLIP_MEAN)
DEFAULT_PIXEL_STD = tuple(OPENAI_CLIP_STD)
#: Qwen2.5-VL's config needs a video token inside the vocabulary even when no video is ever read
VIDEO_PLACEHOLDER = "<video_placeholder>"


def mrope_section(head_dim: int) -> list[int]:
    """Temporal/height/width split of the rotary half-dimension, in Qwen2.5-VL's proportions (1/4, 3/8, 3/8)."""
    if head_dim % 8:
        raise ValueError(f"the language model's head dimension ({head_dim}) must be a multiple of 8 for mrope")
    temporal = head_dim // 8
    rest = head_dim // 2 - temporal
    return [temporal, rest // 2, rest - rest // 2]


def add_video_placeholder(tokenizer: PreTrainedTokenizerBase) -> int:
    """Give a word tokenizer the video token Qwen2.5-VL's config requires; return its id."""
    tokenizer.add_tokens([VIDEO_PLACEHOLDER], special_tokens=True)
    return int(tokenizer.convert_tokens_to_ids(VIDEO_PLACEHOLDER))


def tiny_qwen_vl_config(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    vision_hidden_size: int,
    vision_layers: int,
    vision_heads: int,
    image_size: int,
    patch_size: int,
) -> Qwen2_5_VLConfig:
    """A small ``Qwen2_5_VLConfig`` over the word tokenizer of the default world.

    The whole image is one attention window and every vision block attends
    fully: at 32 px, windows would only cost time.
    """
    video_id = add_video_placeholder(tokenizer)
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_heads,
        "max_position_embeddings": 1024,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                            "mrope_section": mrope_section(hidden_size // num_heads)},
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "depth": vision_layers,
        "hidden_size": vision_hidden_size,
        "intermediate_size": 2 * vision_hidden_size,
        "num_heads": vision_heads,
        "patch_size": patch_size,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": image_size,
        "out_hidden_size": hidden_size,
        "fullatt_block_indexes": list(range(vision_layers)),
    }
    ids = tokenizer.convert_tokens_to_ids([tt.IMAGE_PLACEHOLDER, tt.BOI, tt.EOI])
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids[0],
        video_token_id=video_id,
        vision_start_token_id=ids[1],
        vision_end_token_id=ids[2],
    )


def image_block_tokens(tokenizer: PreTrainedTokenizerBase, config: Qwen2_5_VLConfig) -> tuple[str, str, str]:
    """(vision start, image placeholder, vision end) token strings of a checkpoint."""
    start, image, end = tokenizer.convert_ids_to_tokens(
        [config.vision_start_token_id, config.image_token_id, config.vision_end_token_id]
    )
    return start, image, end


def grid_side(config: Qwen2_5_VLConfig, image_size: int) -> int:
    """Patches per side of an ``image_size`` image; raises if the size does not tile into merge blocks."""
    vision = config.vision_config
    unit = vision.patch_size * vision.spatial_merge_size
    if image_size % unit:
        raise ValueError(f"understanding size {image_size} must be a multiple of patch_size x spatial_merge_size "
                         f"= {unit} for this Qwen2.5-VL")
    return image_size // vision.patch_size


def num_image_tokens(config: Qwen2_5_VLConfig, image_size: int) -> int:
    """``h_v`` tokens per image (after the 2x2 merger)."""
    return (grid_side(config, image_size) // config.vision_config.spatial_merge_size) ** 2


def to_patches(pixels: torch.Tensor, config: Qwen2_5_VLConfig, image_size: int, mean: tuple[float, ...],
               std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels (B, 3, H, W) in [-1, 1] to Qwen's flat patches (B*h*w, 3*T*p*p) and ``grid_thw`` (B, 3).

    Resized to ``image_size``, normalised with the checkpoint's mean/std, each
    patch repeated over the temporal patch, rows ordered merge-block by
    merge-block: the layout of ``Qwen2VLImageProcessor``.
    """
    vision = config.vision_config
    p, m, t = vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size
    side = grid_side(config, image_size)
    x = (resize_to(pixels.float(), image_size) + 1) / 2
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    b = x.shape[0]
    x = x.reshape(b, 3, side // m, m, p, side // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
    x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, t, -1, -1)
    flat = x.reshape(b * side * side, 3 * t * p * p)
    grid = torch.tensor([[1, side, side]] * b, dtype=torch.long)
    return flat, grid


def image_features(vlm: Qwen2_5_VLForConditionalGeneration, pixels: torch.Tensor, image_size: int,
                   mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``h_v`` (B, N, D): the vision tower and merger of the VLM on same-sized images."""
    flat, grid = to_patches(pixels, vlm.config, image_size, mean, std)
    visual = vlm.model.visual
    out = visual(flat.to(device=visual.device, dtype=visual.dtype), grid_thw=grid.to(visual.device))
    return out.pooler_output.reshape(pixels.shape[0], -1, vlm.config.text_config.hidden_size)


def mrope_positions(vlm: Qwen2_5_VLForConditionalGeneration, ids: torch.Tensor, mask: torch.Tensor,
                    image_size: int) -> torch.Tensor:
    """3-D rotary positions (3, B, L) of a left-padded batch whose image blocks are ``image_size`` images."""
    image_slots = ids == vlm.config.image_token_id
    rows_with_image = int(image_slots.any(dim=1).sum())
    grid = None
    if rows_with_image:
        side = grid_side(vlm.config, image_size)
        grid = torch.tensor([[1, side, side]] * rows_with_image, dtype=torch.long, device=ids.device)
    positions, _ = vlm.model.get_rope_index(ids, mm_token_type_ids=image_slots.int(), image_grid_thw=grid,
                                            attention_mask=mask)
    return positions


def run_language_model(vlm: Qwen2_5_VLForConditionalGeneration, embeds: torch.Tensor, mask: torch.Tensor,
                       positions: torch.Tensor) -> torch.Tensor:
    """Last hidden states (B, L, D) of the VLM's language model on prepared embeddings."""
    return vlm.model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                    use_cache=False).last_hidden_state
