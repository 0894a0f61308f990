"""The masked-autoregressive (Harmon) adapter: continuous tokens, MAR encoder/decoder, per-token flow head."""

from __future__ import annotations

import pytest
import torch

from reca.models import registry
from reca.models.latent_tokenizers import AutoencoderKLTokenizer, PatchLatents
from reca.models.mar import HarmonMARAdapter, TinyMARParams
from reca.models.mar_modules import FlowHead
from reca_fixtures.models import (
    TEXTS,
    TINY,
    assert_round_trip_reproduces_losses,
    default_tiny_params,
    one_torch_thread,
    tiny_pixels,
)

_single_thread = pytest.fixture(autouse=True)(one_torch_thread)


def build(image_tokenizer: str = "patch_latents", seed: int = 0) -> HarmonMARAdapter:
    tiny = TinyMARParams(**TINY, head_width=32, head_layers=2, decoding_steps=4, sampling_steps=4)
    return HarmonMARAdapter.build_from_scratch(tiny, texts=TEXTS, images=tiny_pixels(16), seed=seed,
                                               image_tokenizer=image_tokenizer)


def test_saved_directory_holds_the_llm_and_the_mar_modules(tmp_path):
    # the protocol suite checks the round trip's losses; this pins the layout
    build().save_pretrained(tmp_path / "m")
    assert isinstance(registry.load(tmp_path / "m").latents, PatchLatents)
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert (tmp_path / "m" / "mar_modules" / "diffusion_pytorch_model.safetensors").exists()


def test_autoencoder_kl_latents_round_trip_through_diffusers_format(tmp_path):
    adapter = build(image_tokenizer="autoencoder_kl")
    assert isinstance(adapter.latents, AutoencoderKLTokenizer)
    assert adapter.latents.encode(tiny_pixels(2)).shape == (2, 16, 4)
    loaded = assert_round_trip_reproduces_losses(adapter, tmp_path / "vae", tiny_pixels(2))
    assert (tmp_path / "vae" / "vae" / "diffusion_pytorch_model.safetensors").exists()
    assert isinstance(loaded.latents, AutoencoderKLTokenizer)
    assert loaded.text_to_image([TEXTS[0]]).shape == (1, 3, 16, 16)


def test_h_v_is_the_mar_encoders_unmasked_features_pooled_and_projected():
    adapter = build().eval()
    pixels = tiny_pixels(2)
    with torch.no_grad():
        features = adapter.understanding_features(pixels)
        expected = adapter.mar.encoder(PatchLatents(16, 4).encode(pixels))
        h_v = adapter.understanding_embeddings(features)
    assert torch.allclose(features, expected)
    assert h_v.shape == (2, (16 // 8) ** 2, TINY["hidden_size"])  # 4x4 token grid pooled to the 2x2 h_v grid
    assert torch.allclose(h_v[:, 0], adapter.mar.projector(features.reshape(2, 4, 4, -1)[:, :2, :2].mean((1, 2))),
                          atol=1e-6)


def test_flow_sampler_follows_the_velocity_to_its_target():
    head = FlowHead(token_dim=3, cond_dim=2, width=8, depth=1)
    target = torch.tensor([[0.5, -0.25, 1.0]])

    # The exact velocity of the straight path from noise to a point mass at ``target``.
    head.forward = lambda x, t, z: (x - target) / t[:, None]
    out = head.sample(torch.zeros(1, 2), 3, steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, target, atol=1e-5)


def test_flow_loss_is_zero_for_the_exact_velocity():
    head = FlowHead(token_dim=3, cond_dim=2, width=8, depth=1)
    x = torch.randn(6, 3)
    # loss(x) regresses noise - x; a head that knows x predicts it as (x_t - x) / t.
    head.forward = lambda x_t, t, z: (x_t - x) / t[:, None]
    assert head.loss(x, torch.zeros(6, 2)).item() < 1e-8


def test_patch_latents_decode_exactly():
    latents = PatchLatents(16, 4)
    pixels = tiny_pixels(2)
    assert latents.encode(pixels).shape == (2, 16, 48)
    assert torch.equal(latents.decode(latents.encode(pixels)), pixels)


def test_unknown_image_tokenizer_names_the_choices():
    with pytest.raises(ValueError, match="patch_latents, patch_kmeans, autoencoder_kl"):
        build(image_tokenizer="janus_vq")


def test_default_params_switch_to_this_adapter_with_one_key():
    tiny = default_tiny_params("harmon_mar")
    assert isinstance(tiny, TinyMARParams)
    assert "harmon_mar" in registry.available()
