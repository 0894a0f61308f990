"""The masked-token (Show-o) adapter and the masked-decoding pieces it shares with MAR."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from reca.models import registry
from reca.models.base import Condition
from reca.models.conditioning import positions_from_mask
from reca.models.image_tokenizers import PatchKMeansTokenizer
from reca.models.latent_tokenizers import VQModelTokenizer
from reca.models.masked import MaskedTokenModules, ShowOMaskedAdapter, TinyMaskedParams
from reca.models.masked_common import (
    choose_reveal,
    masked_counts,
    omni_attention_mask,
    sample_training_mask,
)
from reca_fixtures.models import (
    TEXTS,
    TINY,
    assert_round_trip_reproduces_losses,
    default_tiny_params,
    one_torch_thread,
    tiny_pixels,
)

_single_thread = pytest.fixture(autouse=True)(one_torch_thread)


def build(image_tokenizer: str = "patch_kmeans", seed: int = 0) -> ShowOMaskedAdapter:
    tiny = TinyMaskedParams(**TINY, kmeans_iters=3, decoding_steps=4)
    return ShowOMaskedAdapter.build_from_scratch(tiny, texts=TEXTS, images=tiny_pixels(16), seed=seed,
                                                 image_tokenizer=image_tokenizer)


# ------------------------------------------------------------------ the adapter


def test_saved_directory_keeps_the_llm_on_top_and_the_encoder_beside_it(tmp_path):
    # the protocol suite checks the round trip's losses; this pins the layout
    build().save_pretrained(tmp_path / "m")
    assert isinstance(registry.load(tmp_path / "m").image_tokenizer, PatchKMeansTokenizer)
    # The LLM sits at the top of the directory, loadable on its own by transformers.
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert (tmp_path / "m" / "understanding_encoder" / "model.safetensors").exists()


def test_vq_model_tokenizer_round_trips_through_diffusers_format(tmp_path):
    adapter = build(image_tokenizer="vq_model")
    assert isinstance(adapter.image_tokenizer, VQModelTokenizer)
    assert adapter.image_tokenizer.encode(tiny_pixels(2)).shape == (2, (16 // 4) ** 2)
    loaded = assert_round_trip_reproduces_losses(adapter, tmp_path / "vq", tiny_pixels(2))
    assert (tmp_path / "vq" / "vq_model" / "diffusion_pytorch_model.safetensors").exists()
    assert not (tmp_path / "vq" / "image_tokenizer.safetensors").exists()
    assert isinstance(loaded.image_tokenizer, VQModelTokenizer)


def test_clip_encoder_with_a_class_token_gets_one_more_placeholder(tmp_path):
    base = build()
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, image_size=16, patch_size=8))
    adapter = ShowOMaskedAdapter(base.llm, base.tokenizer, clip, base.token_modules, base.image_tokenizer)
    assert adapter.prompter.num_image_tokens == (16 // 8) ** 2 + 1
    loaded = assert_round_trip_reproduces_losses(adapter, tmp_path / "clip", tiny_pixels(2))
    assert isinstance(loaded.understanding_encoder, CLIPVisionModel)


def test_mismatched_token_modules_are_rejected():
    base = build()
    modules = MaskedTokenModules(understanding_dim=32, hidden_size=32, num_codes=32, num_tokens=16)
    with pytest.raises(ValueError, match="codes"):
        ShowOMaskedAdapter(base.llm, base.tokenizer, base.understanding_encoder, modules, base.image_tokenizer)


def test_unknown_image_tokenizer_names_the_choices():
    with pytest.raises(ValueError, match="patch_kmeans, vq_model"):
        build(image_tokenizer="janus_vq")


def test_default_params_switch_to_this_adapter_with_one_key():
    tiny = default_tiny_params("showo_masked")
    assert isinstance(tiny, TinyMaskedParams)
    assert "showo_masked" in registry.available()


# --------------------------------------------------- shared with the MAR adapter


def test_image_block_is_bidirectional_and_the_text_prefix_causal():
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2)).eval()
    prefix_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    x = torch.randn(2, 7, 16)

    def hidden(inputs):
        full = torch.cat([prefix_mask, torch.ones(2, 3, dtype=torch.long)], dim=1)
        return llm.base_model(inputs_embeds=inputs, attention_mask=omni_attention_mask(prefix_mask, 3, x.dtype),
                              position_ids=positions_from_mask(full)).last_hidden_state

    changed_last_image = x.clone()
    changed_last_image[:, 6] += 1
    changed_padding = x.clone()
    changed_padding[0, 0] += 1
    with torch.no_grad():
        ref, a, b = hidden(x), hidden(changed_last_image), hidden(changed_padding)
    assert torch.allclose(ref[:, :4], a[:, :4])  # the text prefix never sees image tokens
    assert not torch.allclose(ref[:, 4], a[:, 4])  # the first image token sees the last one
    assert torch.allclose(ref[0, 1:], b[0, 1:])  # padding is never attended


def test_masked_counts_follow_the_cosine_schedule_to_zero():
    counts = masked_counts(64, 8)
    assert counts == [math.floor(64 * math.cos(math.pi / 2 * k / 8)) for k in range(1, 9)]
    assert counts[-1] == 0 and all(a > b for a, b in zip(counts, counts[1:], strict=False))
    assert masked_counts(3, 10) == [2, 1, 0]  # every step reveals at least one token


def test_choose_reveal_keeps_the_lowest_scores_masked():
    still = torch.tensor([[True, True, True, False]])
    scores = torch.tensor([[0.1, 0.9, 0.5, 5.0]])
    assert choose_reveal(still, scores, keep_masked=1).tolist() == [[False, True, True, False]]


def test_training_masks_cover_the_schedule_and_never_mask_nothing():
    masks = sample_training_mask(2000, 16, torch.device("cpu"), torch.Generator().manual_seed(0))
    counts = masks.sum(-1).float()
    assert counts.min() >= 1 and counts.max() == 16
    # E[cos(pi/2 u)] = 2/pi of the tokens masked on average.
    assert abs(counts.mean().item() / 16 - 2 / math.pi) < 0.05


def test_latent_condition_is_the_image_token_embedding_of_the_codes():
    adapter = build().eval()
    pixels = tiny_pixels(2)
    latents = adapter.latent_condition(pixels)
    assert latents.shape == (2, adapter.tokens_per_image, adapter.llm.config.hidden_size)
    codes = adapter.image_tokenizer.encode(pixels)
    assert torch.equal(latents, adapter.token_modules.embeddings(codes))
    # A prompt with as many placeholders as the latents have tokens carries them.
    condition = Condition(texts=[TEXTS[2]] * 2, image_embeddings=latents)
    assert torch.isfinite(adapter.generation_loss(condition, pixels))
