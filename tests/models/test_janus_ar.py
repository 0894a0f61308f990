"""The discrete-autoregressive (Janus) adapter on tiny random-weight configs."""

from __future__ import annotations

import torch

from reca.models import registry
from reca.models.base import Condition
from reca.models.janus_ar import JanusARAdapter, TinyJanusParams
from reca_fixtures.models import TEXTS, TINY, tiny_pixels


def _reca_condition(adapter, pixels, drop=None):
    return Condition(texts=[TEXTS[2]] * len(pixels), image_embeddings=adapter.embed_images(pixels), drop=drop)


def test_latent_condition_feeds_the_vq_codes_back_through_the_generation_embeddings(tiny_adapter):
    adapter = tiny_adapter.eval()
    pixels = tiny_pixels(2)
    with torch.no_grad():
        latents = adapter.latent_condition(pixels)
        expected = adapter.model.prepare_embeddings_for_image_generation(adapter.generation_tokenizer.encode(pixels))
        assert torch.equal(latents, expected)
        assert latents.shape[1] == adapter.tokens_per_image != adapter.num_understanding_tokens
        # The prompt grows as many placeholders as the condition has tokens.
        prefix, _ = adapter._condition_prefix(Condition(texts=[TEXTS[2]] * 2, image_embeddings=latents))
        h_v_prefix, _ = adapter._condition_prefix(_reca_condition(adapter, pixels))
        assert prefix.shape[1] - h_v_prefix.shape[1] == adapter.tokens_per_image - adapter.num_understanding_tokens
        # Half-size input is resized to the tokenizer's side first.
        small = torch.nn.functional.avg_pool2d(pixels, 2)
        assert adapter.latent_condition(small).shape == latents.shape


def test_saved_directory_is_a_transformers_janus(tiny_adapter, tmp_path):
    # the protocol suite checks the round trip's losses; this pins the layout
    tiny_adapter.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert isinstance(registry.load(tmp_path / "m"), JanusARAdapter)


def test_i2t_loss_falls_when_overfitting(tiny_adapter):
    adapter = tiny_adapter
    adapter.set_frozen(["image_tokenizer"])
    pixels = tiny_pixels(2)
    opt = torch.optim.AdamW(adapter.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = adapter.i2t_loss(pixels, [TEXTS[3]] * 2, [TEXTS[0], TEXTS[1]])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_janus_vq_tokenizer_path_uses_the_models_own_vq(tmp_path):
    adapter = JanusARAdapter.build_from_scratch(TinyJanusParams(**TINY), texts=TEXTS, images=tiny_pixels(4),
                                                image_tokenizer="janus_vq")
    pixels = tiny_pixels(2)
    ids = adapter.generation_tokenizer.encode(pixels)
    assert ids.shape == (2, (16 // 8) ** 2)
    loss = adapter.generation_loss(_reca_condition(adapter, pixels), pixels)
    assert torch.isfinite(loss)
    adapter.save_pretrained(tmp_path / "vq")
    assert not (tmp_path / "vq" / "image_tokenizer.safetensors").exists()
    loaded = registry.load(tmp_path / "vq")
    assert loaded.generation_tokenizer.num_tokens == 4


def test_freezing_an_unknown_part_names_the_known_ones(tiny_adapter):
    import pytest

    with pytest.raises(ValueError, match="understanding_encoder"):
        tiny_adapter.set_frozen(["vision_tower"])


def test_registry_lists_janus_and_rejects_unknown_names():
    import pytest

    assert "janus_ar" in registry.available()
    with pytest.raises(KeyError, match="janus_ar"):
        registry.get("nope")
