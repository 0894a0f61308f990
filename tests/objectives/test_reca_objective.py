"""The RecA objective: L = λ_reca·L_reca + λ_i2t·L_i2t + λ_t2i·L_t2i, written against the protocol."""

from __future__ import annotations

import pytest
import torch

from reca.objectives.reca import CaptionedBatch, RecAObjective, ReconstructionBatch, TrainBatch
from reca_fixtures.models import TEXTS, tiny_pixels


def _batch(adapter, n=3, features=True, seed=0):
    pixels = tiny_pixels(n, seed=seed)
    recon = ReconstructionBatch(
        targets=pixels,
        templates=[TEXTS[2]] * n,
        drop=torch.zeros(n, dtype=torch.bool),
        features=adapter.understanding_features(pixels).detach() if features else None,
        pixels=None if features else pixels,
    )
    cap = CaptionedBatch(pixels=pixels, captions=[TEXTS[0]] * n, instructions=[TEXTS[3]] * n,
                         drop=torch.zeros(n, dtype=torch.bool))
    return TrainBatch(reconstruction=recon, captioned=cap)


def test_total_is_the_weighted_sum_of_the_terms(tiny_adapter):
    batch = _batch(tiny_adapter)
    obj = RecAObjective(tiny_adapter.eval(), lambda_reca=1.0, lambda_i2t=0.5, lambda_t2i=2.0)
    with torch.no_grad():
        total, terms = obj(batch)
    expected = terms["loss_reca"] + 0.5 * terms["loss_i2t"] + 2.0 * terms["loss_t2i"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(terms) == {"loss", "loss_reca", "loss_i2t", "loss_t2i"}
    # logged values stay tensors (no host read-back inside forward) and carry no graph
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in terms.values())
    assert obj.supervised_tokens(batch) == 2 * 3 * tiny_adapter.tokens_per_image


def test_forward_is_the_weighted_sum_of_the_named_terms(tiny_adapter):
    obj = RecAObjective(tiny_adapter.eval(), lambda_reca=1.0, lambda_i2t=0.5, lambda_t2i=2.0)
    batch = _batch(tiny_adapter)
    with torch.no_grad():
        L = obj.terms(batch)
        total, _ = obj(batch)
    assert set(L) == {"reca", "i2t", "t2i"}
    assert torch.equal(total, 1.0 * L["reca"] + 0.5 * L["i2t"] + 2.0 * L["t2i"])


def test_zero_weight_terms_are_not_computed(tiny_adapter):
    batch = _batch(tiny_adapter)
    batch.captioned = None
    obj = RecAObjective(tiny_adapter, lambda_reca=1.0, lambda_i2t=0.0, lambda_t2i=0.0)
    _, terms = obj(batch)
    assert set(terms) == {"loss", "loss_reca"}
    assert obj.supervised_tokens(batch) == 3 * tiny_adapter.tokens_per_image


def test_cached_features_and_live_encoder_give_the_same_loss(tiny_adapter):
    obj = RecAObjective(tiny_adapter.eval(), lambda_reca=1.0, lambda_i2t=0.0, lambda_t2i=0.0)
    with torch.no_grad():
        cached, _ = obj(_batch(tiny_adapter, features=True))
        live, _ = obj(_batch(tiny_adapter, features=False))
    assert torch.allclose(cached, live, atol=1e-6)


def test_template_only_control_ignores_h_v(tiny_adapter):
    obj = RecAObjective(tiny_adapter.eval(), lambda_reca=1.0, lambda_i2t=0.0, lambda_t2i=0.0,
                        condition="template_only")
    a, b = _batch(tiny_adapter), _batch(tiny_adapter)
    b.reconstruction.features = torch.randn_like(b.reconstruction.features)
    with torch.no_grad():
        assert torch.equal(obj(a)[0], obj(b)[0])
    obj.condition = "understanding"
    with torch.no_grad():
        assert not torch.equal(obj(a)[0], obj(b)[0])


def test_generation_latent_condition_reads_the_degraded_pixels_not_h_v(tiny_adapter):
    obj = RecAObjective(tiny_adapter.eval(), lambda_reca=1.0, lambda_i2t=0.0, lambda_t2i=0.0,
                        condition="generation_latents")
    a = _batch(tiny_adapter, features=False)
    other_pixels = _batch(tiny_adapter, features=False)
    other_pixels.reconstruction.pixels = tiny_pixels(3, seed=7)
    with torch.no_grad():
        base = obj(a)[0]
        assert not torch.equal(base, obj(other_pixels)[0])
        # The condition is the generation encoder's codes, not h_v: it differs from the RecA loss.
        obj.condition = "understanding"
        assert not torch.equal(base, obj(a)[0])
    obj.condition = "generation_latents"
    a.reconstruction.pixels = None
    with pytest.raises(ValueError, match="understanding pixels"):
        obj(a)


def test_unknown_or_unsupported_condition_is_refused(tiny_adapter):
    with pytest.raises(ValueError, match="expected one of"):
        RecAObjective(tiny_adapter, condition="vae")


def test_missing_batch_part_is_a_clear_error(tiny_adapter):
    obj = RecAObjective(tiny_adapter, lambda_reca=1.0, lambda_i2t=1.0)
    batch = _batch(tiny_adapter)
    batch.captioned = None
    with pytest.raises(ValueError, match="captioned"):
        obj(batch)
