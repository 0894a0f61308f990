"""The continuous flow-matching adapter (Qwen2.5-VL + queries + connector + SANA/PixArt) on tiny configs."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from reca.data.transforms import to_pil, to_tensor
from reca.models import qwen_vl, registry
from reca.models.base import Condition
from reca.models.flow_matching import FlowMatchingAdapter, TinyFlowParams
from reca.models.model_params import resolve_model_params
from reca.objectives.reca import RecAObjective
from reca.params import ParamsError, parse_section
from reca_fixtures.models import (
    TEXTS,
    assert_round_trip_reproduces_losses,
    default_tiny_params,
    eval_reca_loss,
    reca_condition,
    tiny_pixels,
)

FLOW_TINY = {
    "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
    "vision_hidden_size": 32, "vision_layers": 1, "vision_heads": 2, "image_size": 16, "vision_patch_size": 8,
    "token_patch_size": 4, "decoding_steps": 4, "num_queries": 4, "connector_layers": 1, "connector_width": 32,
    "connector_heads": 2, "transformer_layers": 2, "transformer_heads": 2, "transformer_head_dim": 16,
}
PAPER_POLICY = list(FlowMatchingAdapter.default_frozen)


def build(seed: int = 0, image_tokenizer: str = "patch_kmeans", **overrides) -> FlowMatchingAdapter:
    return FlowMatchingAdapter.build_from_scratch(TinyFlowParams(**{**FLOW_TINY, **overrides}), texts=TEXTS,
                                                  images=tiny_pixels(4), seed=seed, image_tokenizer=image_tokenizer)


@pytest.fixture
def adapter() -> FlowMatchingAdapter:
    return build()


def test_paper_policy_trains_only_queries_connector_and_transformer(adapter):
    adapter.set_frozen(PAPER_POLICY)
    pixels = tiny_pixels(3)
    adapter.generation_loss(reca_condition(adapter, pixels), pixels).backward()
    trainable = {"queries", "connector", "diffusion_transformer"}
    for part, module in adapter.parts().items():
        grads = [p.grad for p in module.parameters()]
        if part in trainable:
            assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), part
        else:
            assert all(g is None for g in grads), f"frozen part {part} received a gradient"


def test_captioning_with_a_frozen_vlm_fails_naming_lambda_i2t(adapter):
    adapter.set_frozen(PAPER_POLICY)
    with pytest.raises(ValueError, match="lambda_i2t"):
        adapter.i2t_loss(tiny_pixels(2), [TEXTS[3]] * 2, [TEXTS[0]] * 2)
    with torch.no_grad():  # measuring captioning of a frozen VLM is fine
        assert torch.isfinite(adapter.i2t_loss(tiny_pixels(2), [TEXTS[3]] * 2, [TEXTS[0]] * 2))


def test_captioning_loss_falls_when_the_vlm_trains(adapter):
    adapter.set_frozen(["image_tokenizer"])
    pixels = tiny_pixels(2)
    opt = torch.optim.AdamW(adapter.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = adapter.i2t_loss(pixels, [TEXTS[3]] * 2, [TEXTS[0], TEXTS[1]])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_dropped_condition_reads_the_unconditional_prompt_whatever_its_text(adapter):
    with torch.no_grad():
        a = adapter.condition_states(Condition(texts=[TEXTS[0], TEXTS[1]], drop=torch.tensor([True, False])))
        b = adapter.condition_states(Condition(texts=[TEXTS[1], TEXTS[1]], drop=torch.tensor([True, False])))
        c = adapter.condition_states(Condition(texts=[TEXTS[0], TEXTS[0]], drop=torch.tensor([False, False])))
    assert torch.allclose(a[0], b[0], atol=1e-6)
    assert not torch.allclose(a[0], c[0], atol=1e-4)


def test_saved_directory_has_the_diffusers_and_transformers_layout(adapter, tmp_path):
    # the protocol suite checks the round trip's losses; this pins the layout
    adapter.save_pretrained(tmp_path / "m")
    loaded = registry.load(tmp_path / "m")
    for rel in ("model.safetensors", "vlm/config.json", "vlm/tokenizer.json", "transformer/config.json",
                "scheduler/scheduler_config.json"):
        assert (tmp_path / "m" / rel).exists(), rel
    assert not (tmp_path / "m" / "vae").exists()  # the patch latent space has no weights
    assert loaded.generation_size == 16 and loaded.understanding_size == 16


@pytest.mark.parametrize(("transformer", "image_tokenizer", "vae_class"), [
    ("pixart", "autoencoder_kl", "AutoencoderKL"),
    ("sana", "autoencoder_dc", "AutoencoderDC"),
])
def test_real_vae_and_transformer_classes_round_trip(tmp_path, transformer, image_tokenizer, vae_class):
    adapter = build(transformer=transformer, image_tokenizer=image_tokenizer, token_patch_size=2)
    loaded = assert_round_trip_reproduces_losses(adapter, tmp_path / "m", tiny_pixels(2))
    assert json.loads((tmp_path / "m" / "vae" / "config.json").read_text())["_class_name"] == vae_class
    assert type(loaded.transformer) is type(adapter.transformer)
    out = loaded.text_to_image([TEXTS[0]], generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 16, 16)


def test_directory_of_real_parts_loads_with_fresh_queries_and_warns(adapter, tmp_path, caplog):
    adapter.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with caplog.at_level(logging.WARNING, logger="reca.models.flow_matching"):
        loaded = registry.load(tmp_path / "m")
    assert "fresh random weights" in caplog.text
    assert torch.equal(loaded.transformer.proj_out.weight, adapter.transformer.proj_out.weight)
    assert not torch.equal(loaded.queries.weight, adapter.queries.weight)


def test_missing_adapter_file_explains_what_to_write(adapter, tmp_path):
    adapter.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "reca_adapter.json").unlink()
    with pytest.raises(FileNotFoundError, match="num_queries"):
        FlowMatchingAdapter.from_pretrained(tmp_path / "m")


def test_transformer_without_cross_attention_is_refused(adapter, tmp_path):
    from diffusers import DiTTransformer2DModel

    adapter.save_pretrained(tmp_path / "m")
    shutil.rmtree(tmp_path / "m" / "transformer")
    DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, num_layers=1,
                          sample_size=4).save_pretrained(tmp_path / "m" / "transformer")
    with pytest.raises(ValueError, match="cross-attention"):
        registry.load(tmp_path / "m")


def test_guidance_changes_the_sample(adapter):
    with torch.no_grad():
        guided = adapter.text_to_image([TEXTS[0]], guidance_scale=4.0, generator=torch.Generator().manual_seed(0))
        plain = adapter.text_to_image([TEXTS[0]], guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(guided, plain)


def test_cached_features_give_the_live_h_v(adapter):
    adapter.eval()
    pixels = tiny_pixels(2)
    with torch.no_grad():
        features = adapter.understanding_features(pixels)
        assert features.shape == (2, 4, FLOW_TINY["hidden_size"])  # (16 / 8)^2 h_v tokens after the merger
        assert torch.equal(adapter.understanding_embeddings(features), adapter.embed_images(pixels))
    assert eval_reca_loss(adapter, pixels) == eval_reca_loss(adapter, pixels)


def test_pixels_are_cut_into_the_qwen_image_processor_layout(adapter):
    image = to_pil(tiny_pixels(1, seed=2)[0])
    processor = Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2)
    expected = processor(images=[image], do_resize=False, return_tensors="pt")
    flat, grid = qwen_vl.to_patches(to_tensor(image)[None], adapter.vlm.config, 16, qwen_vl.DEFAULT_PIXEL_MEAN,
                                    qwen_vl.DEFAULT_PIXEL_STD)
    assert torch.equal(grid, expected["image_grid_thw"])
    assert torch.allclose(flat, expected["pixel_values"], atol=1e-5)


def test_training_pair_and_euler_sampler_agree_on_the_time_grid():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from reca.models.flow_transformer import FlowMatching

    flow = FlowMatching(FlowMatchEulerDiscreteScheduler(shift=3.0))
    x0 = torch.randn(4, 3, 2, 2)
    noisy, timesteps, target = flow.training_pair(x0, torch.Generator().manual_seed(0))
    sigma = (timesteps / 1000).view(-1, 1, 1, 1)  # timesteps are sigma on the 0-1000 scale
    assert torch.allclose(noisy - sigma * target, x0, atol=1e-5)
    # With the exact velocity of a one-point data set the flow is straight: Euler steps land on it.
    out = flow.sample(lambda x, t: (x - x0) / (t / 1000).view(-1, 1, 1, 1), (4, 3, 2, 2), steps=3,
                      generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out, x0, atol=1e-4)


def test_default_params_switch_to_this_adapter_with_one_key():
    tiny = default_tiny_params("flow_matching")
    assert isinstance(tiny, TinyFlowParams)
    assert tiny.image_size == 32 and tiny.vision_patch_size == 8


def test_tiny_params_reject_shapes_qwen_cannot_take():
    with pytest.raises(ParamsError, match="multiple of 8"):
        resolve_model_params(parse_section("model", {"adapter": "flow_matching",
                                                     "tiny": {"hidden_size": 48, "num_heads": 4}}))
    with pytest.raises(ParamsError, match="vision_patch_size must be even"):
        resolve_model_params(parse_section("model", {"adapter": "flow_matching", "tiny": {"vision_patch_size": 1}}))


def test_unknown_latent_space_names_the_choices():
    with pytest.raises(ValueError, match="patch_latents, patch_kmeans, autoencoder_kl, autoencoder_dc"):
        build(image_tokenizer="janus_vq")


def test_generation_latent_condition_is_refused_with_the_reason(adapter):
    # The LLM never reads VAE latents here (they reach the DiT through the connector only).
    with pytest.raises(ValueError, match="cannot condition on its generation latents"):
        RecAObjective(adapter, condition="generation_latents")
