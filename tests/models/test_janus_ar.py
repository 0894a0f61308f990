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


# A chat template in the layout transformers 5 writes for a Janus processor: the message content is a list of
# typed parts, and a string content renders nothing of the user's turn (our own template text, same layout).
PARTS_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}<|User|>: {% else %}<|Assistant|>: {% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image_placeholder>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}\n\n{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)


def _published_layout(tmp_path, template: str):
    """A Janus directory as transformers 5 saves a published one: named image tokens, a parts chat template."""
    from transformers import PreTrainedTokenizerFast

    from reca.models import text_tokenizer as tt

    adapter = JanusARAdapter.build_from_scratch(TinyJanusParams(**TINY), texts=TEXTS, images=tiny_pixels(4),
                                                image_tokenizer="janus_vq")
    word = adapter.tokenizer
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word.backend_tokenizer, bos_token=tt.BOS, eos_token=tt.EOS, pad_token=tt.PAD,
        unk_token=tt.UNK, extra_special_tokens={"image_token": tt.IMAGE_PLACEHOLDER, "boi_token": tt.BOI,
                                                "eoi_token": tt.EOI})
    directory = tmp_path / "janus-pro"
    adapter.model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "chat_template.jinja").write_text(template)
    return directory


def test_published_chat_template_layout_renders_the_text_and_the_wrapped_image_slots(tmp_path):
    from reca.models import text_tokenizer as tt

    adapter = registry.load(_published_layout(tmp_path, PARTS_TEMPLATE), adapter="janus_ar")
    n = adapter.num_understanding_tokens
    ids = list(adapter.prompter.ids(TEXTS[0], n))
    tok = adapter.tokenizer
    # the processor's wrapping: <begin_of_image> + n placeholders + <end_of_image>, then the text
    start = ids.index(tok.convert_tokens_to_ids(tt.BOI))
    assert ids[start + 1: start + 1 + n] == [adapter.image_token_id] * n
    assert ids[start + 1 + n] == tok.convert_tokens_to_ids(tt.EOI)
    assert tok.decode(ids).split(tt.EOI)[1].strip().startswith(TEXTS[0])
    pixels = tiny_pixels(2)
    assert torch.isfinite(adapter.generation_loss(_reca_condition(adapter, pixels), pixels))
    assert torch.isfinite(adapter.i2t_loss(pixels, [TEXTS[3]] * 2, [TEXTS[0]] * 2))


def test_a_chat_template_that_drops_the_prompt_is_an_error_naming_its_file(tmp_path):
    import pytest

    directory = _published_layout(tmp_path, "{% for message in messages %}<|User|>: {% endfor %}<|Assistant|>:")
    adapter = registry.load(directory, adapter="janus_ar")
    with pytest.raises(ValueError, match=r"chat_template\.jinja: the rendered prompt lost its text"):
        adapter.generation_loss(_reca_condition(adapter, tiny_pixels(1)), tiny_pixels(1))
