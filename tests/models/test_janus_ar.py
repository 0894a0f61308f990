"""The discrete-autoregressive (Janus) adapter on tiny random-weight configs."""

from __future__ import annotations

import torch

from reca.models import registry
from reca.models.base import Condition
from reca.models.janus_ar import JanusARAdapter, TinyJanusParams
from reca_testing import TEXTS, TINY, tiny_pixels


def _reca_condition(adapter, pixels, drop=None):
    return Condition(texts=[TEXTS[2]] * len(pixels), image_embeddings=adapter.embed_images(pixels), drop=drop)


def test_reca_loss_falls_when_overfitting_one_batch(tiny_adapter):
    adapter = tiny_adapter
    adapter.set_frozen(["understanding_encoder", "image_tokenizer"])
    pixels = tiny_pixels(4, seed=1)
    opt = torch.optim.AdamW(adapter.trainable_parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = adapter.generation_loss(_reca_condition(adapter, pixels), pixels)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_gradients_reach_only_trainable_parameters(tiny_adapter):
    adapter = tiny_adapter
    adapter.set_frozen(["understanding_encoder", "image_tokenizer"])
    pixels = tiny_pixels(3)
    adapter.generation_loss(_reca_condition(adapter, pixels), pixels).backward()
    frozen = {id(p) for name in ("understanding_encoder", "image_tokenizer")
              for p in adapter.parts()[name].parameters()}
    for name, p in adapter.named_parameters():
        if id(p) in frozen:
            assert p.grad is None, f"frozen parameter {name} received a gradient"
    for part in ("understanding_projector", "generation_head", "generation_aligner", "language_model"):
        grads = [p.grad for p in adapter.parts()[part].parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{part} got no gradient"


def test_understanding_encoder_trains_when_unfrozen(tiny_adapter):
    adapter = tiny_adapter
    adapter.set_frozen(["image_tokenizer"])
    pixels = tiny_pixels(3)
    adapter.generation_loss(_reca_condition(adapter, pixels), pixels).backward()
    assert any(p.grad is not None for p in adapter.parts()["understanding_encoder"].parameters())


def test_dropped_condition_ignores_text_and_image(tiny_adapter):
    adapter = tiny_adapter.eval()
    pixels = tiny_pixels(2)
    drop = torch.tensor([True, True])
    with torch.no_grad():
        a = adapter.generation_loss(Condition(texts=[TEXTS[2]] * 2, image_embeddings=adapter.embed_images(pixels),
                                              drop=drop), pixels)
        other = tiny_pixels(2, seed=5)
        b = adapter.generation_loss(Condition(texts=[TEXTS[2]] * 2, image_embeddings=adapter.embed_images(other),
                                              drop=drop), pixels)
        kept = adapter.generation_loss(Condition(texts=[TEXTS[2]] * 2, image_embeddings=adapter.embed_images(other)),
                                       pixels)
    assert torch.allclose(a, b)
    assert not torch.allclose(a, kept)


def test_h_v_changes_the_condition(tiny_adapter):
    adapter = tiny_adapter.eval()
    pixels = tiny_pixels(2)
    with torch.no_grad():
        a = adapter.generation_loss(_reca_condition(adapter, pixels), pixels)
        b = adapter.generation_loss(_reca_condition(adapter, tiny_pixels(2, seed=9)), pixels)
    assert not torch.allclose(a, b)


def test_latent_condition_feeds_the_vq_codes_back_through_the_generation_embeddings(tiny_adapter):
    adapter = tiny_adapter.eval()
    pixels = tiny_pixels(2)
    with torch.no_grad():
        latents = adapter.latent_condition(pixels)
        expected = adapter.model.prepare_embeddings_for_image_generation(adapter.image_tokenizer.encode(pixels))
        assert torch.equal(latents, expected)
        assert latents.shape[1] == adapter.tokens_per_image != adapter.num_understanding_tokens
        # The prompt grows as many placeholders as the condition has tokens.
        prefix, _ = adapter._condition_prefix(Condition(texts=[TEXTS[2]] * 2, image_embeddings=latents))
        h_v_prefix, _ = adapter._condition_prefix(_reca_condition(adapter, pixels))
        assert prefix.shape[1] - h_v_prefix.shape[1] == adapter.tokens_per_image - adapter.num_understanding_tokens
        # Half-size input is resized to the tokenizer's side first.
        small = torch.nn.functional.avg_pool2d(pixels, 2)
        assert adapter.latent_condition(small).shape == latents.shape


def test_save_load_round_trip_reproduces_loss(tiny_adapter, tmp_path):
    adapter = tiny_adapter.eval()
    pixels = tiny_pixels(3)
    with torch.no_grad():
        before = adapter.generation_loss(_reca_condition(adapter, pixels), pixels)
        before_i2t = adapter.i2t_loss(pixels, [TEXTS[3]] * 3, [TEXTS[0]] * 3)
    adapter.save_pretrained(tmp_path / "m")
    loaded = registry.load(tmp_path / "m").eval()
    assert isinstance(loaded, JanusARAdapter)
    with torch.no_grad():
        assert torch.allclose(loaded.generation_loss(_reca_condition(loaded, pixels), pixels), before)
        assert torch.allclose(loaded.i2t_loss(pixels, [TEXTS[3]] * 3, [TEXTS[0]] * 3), before_i2t)
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert loaded.encoder_fingerprint() == adapter.encoder_fingerprint()


def test_generate_returns_images_of_generation_size_and_is_seeded(tiny_adapter):
    adapter = tiny_adapter.eval()
    out1 = adapter.text_to_image([TEXTS[0], TEXTS[1]], guidance_scale=3.0,
                                 generator=torch.Generator().manual_seed(0))
    out2 = adapter.text_to_image([TEXTS[0], TEXTS[1]], guidance_scale=3.0,
                                 generator=torch.Generator().manual_seed(0))
    assert out1.shape == (2, 3, adapter.generation_size, adapter.generation_size)
    assert torch.equal(out1, out2)
    assert out1.min() >= -1 and out1.max() <= 1


def test_edit_conditions_on_the_source_image(tiny_adapter):
    adapter = tiny_adapter.eval()
    out = adapter.edit(tiny_pixels(2), ["make it red", "make it blue"], generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16)


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
    ids = adapter.image_tokenizer.encode(pixels)
    assert ids.shape == (2, (16 // 8) ** 2)
    loss = adapter.generation_loss(_reca_condition(adapter, pixels), pixels)
    assert torch.isfinite(loss)
    adapter.save_pretrained(tmp_path / "vq")
    assert not (tmp_path / "vq" / "image_tokenizer.safetensors").exists()
    loaded = registry.load(tmp_path / "vq")
    assert loaded.image_tokenizer.num_tokens == 4


def test_freezing_an_unknown_part_names_the_known_ones(tiny_adapter):
    import pytest

    with pytest.raises(ValueError, match="understanding_encoder"):
        tiny_adapter.set_frozen(["vision_tower"])


def test_registry_lists_janus_and_rejects_unknown_names():
    import pytest

    assert "janus_ar" in registry.available()
    with pytest.raises(KeyError, match="janus_ar"):
        registry.get("nope")
