"""sft.lambda_align: a contrastive term that pulls each image towards its caption (word embeddings or condition states)."""

from __future__ import annotations

import math

import pytest
import torch

from reca.objectives.reca import CaptionedBatch, TrainBatch
from reca.objectives.sft import SFTObjective, contrastive_alignment_loss
from reca_fixtures.models import TEXTS, tiny_pixels


def test_matched_pairs_score_low_and_swapped_pairs_high() -> None:
    basis = torch.eye(4) * 10.0
    captions = ["a", "b", "c", "d"]
    matched = contrastive_alignment_loss(basis, basis, captions, temperature=0.07)
    swapped = contrastive_alignment_loss(basis, basis[[1, 0, 3, 2]], captions, temperature=0.07)
    assert matched.item() < 1e-3
    assert swapped.item() > 5.0


def _cos_after_a_step(captions: list[str]) -> float:
    """cos(image 0, text 1) after one gradient step on the images (texts fixed)."""
    texts = torch.tensor([[1.0, 0.2], [1.0, -0.2], [0.0, 1.0]])
    images = texts.clone().requires_grad_(True)
    contrastive_alignment_loss(images, texts, captions, temperature=0.1).backward()
    with torch.no_grad():
        moved = images - 0.1 * images.grad
    return torch.nn.functional.cosine_similarity(moved[0], texts[1], dim=0).item()


def test_repeated_captions_are_positives_not_negatives() -> None:
    before = torch.nn.functional.cosine_similarity(torch.tensor([1.0, 0.2]), torch.tensor([1.0, -0.2]), dim=0).item()
    # images 0 and 1 share a caption: image 0 moves towards text 1 ...
    assert _cos_after_a_step(["a", "a", "b"]) > before
    # ... where distinct captions would push it away
    assert _cos_after_a_step(["a", "a2", "b"]) < before
    identical = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    loss = contrastive_alignment_loss(identical, identical, ["a", "a", "b"], temperature=0.01)
    assert loss.item() == pytest.approx(2 * math.log(2) / 3, abs=1e-3)  # the optimum: log 2 per duplicate row


def test_objective_logs_the_term_and_trains_encoder_and_word_embeddings(tiny_adapter) -> None:
    n = 4
    batch = TrainBatch(captioned=CaptionedBatch(pixels=tiny_pixels(n), captions=[TEXTS[0], TEXTS[1]] * 2,
                                                instructions=[TEXTS[3]] * n, drop=torch.zeros(n, dtype=torch.bool)))
    obj = SFTObjective(tiny_adapter, lambda_reca=0.0, lambda_i2t=1.0, lambda_t2i=0.0, lambda_align=0.5)
    total, terms = obj(batch)
    assert total.item() == pytest.approx((terms["loss_i2t"] + 0.5 * terms["loss_align"]).item(), rel=1e-5)
    obj.zero_grad()
    (0.5 * obj.alignment_loss(batch.captioned)).backward()
    model = tiny_adapter.model.model
    assert model.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    assert model.aligner.fc1.weight.grad.abs().sum() > 0
    assert model.language_model.embed_tokens.weight.grad.abs().sum() > 0


def test_adapters_without_text_alignment_refuse_the_term(tiny_adapter) -> None:
    from reca.models.base import TextAligned

    class Plain:
        name = "plain"

    assert isinstance(tiny_adapter, TextAligned)
    with pytest.raises(ValueError, match="lambda_align"):
        SFTObjective(Plain(), lambda_reca=0.0, lambda_i2t=1.0, lambda_align=1.0)  # type: ignore[arg-type]


def _captioned(n: int, templates: list[str]) -> CaptionedBatch:
    return CaptionedBatch(pixels=tiny_pixels(n), captions=[TEXTS[0], TEXTS[1]] * (n // 2),
                          instructions=[TEXTS[3]] * n, drop=torch.zeros(n, dtype=torch.bool), templates=templates)


def test_condition_states_are_the_boi_state_of_every_layer(tiny_adapter) -> None:
    from reca.models.base import Condition

    layers = tiny_adapter.model.config.text_config.num_hidden_layers
    states = tiny_adapter.condition_states(Condition(texts=[TEXTS[0], TEXTS[1]]))
    assert states.shape == (2, layers, tiny_adapter.model.config.text_config.hidden_size)
    # the last layer's state, through the final norm, is what predicts the first image token
    embeds, mask = tiny_adapter._condition_prefix(Condition(texts=[TEXTS[0], TEXTS[1]]))
    assert torch.allclose(states[:, -1], tiny_adapter._run_lm(embeds, mask)[:, -1], atol=1e-5)
    # a caption and a different one land in different states
    assert not torch.allclose(states[0], states[1])


def test_condition_state_alignment_trains_encoder_aligner_and_language_model(tiny_adapter) -> None:
    n = 4
    batch = _captioned(n, templates=[TEXTS[2]] * n)
    obj = SFTObjective(tiny_adapter, lambda_reca=0.0, lambda_i2t=0.0, lambda_t2i=0.0, lambda_align=1.0,
                        align_at="condition_states")
    total, terms = obj(TrainBatch(captioned=batch))
    assert total.item() == pytest.approx(terms["loss_align"].item(), rel=1e-5)
    # not the word-embedding term: a different space gives a different value
    word = SFTObjective(tiny_adapter, lambda_reca=0.0, lambda_i2t=0.0, lambda_align=1.0).alignment_loss(batch)
    assert word.item() != pytest.approx(terms["loss_align"].item(), rel=1e-3)
    obj.zero_grad()
    total.backward()
    model = tiny_adapter.model.model
    assert model.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    assert model.aligner.fc1.weight.grad.abs().sum() > 0
    assert model.language_model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_condition_state_alignment_needs_templates_and_a_known_space(tiny_adapter) -> None:
    obj = SFTObjective(tiny_adapter, lambda_reca=0.0, lambda_i2t=0.0, lambda_align=1.0, align_at="condition_states")
    with pytest.raises(ValueError, match="template"):
        obj.alignment_loss(_captioned(2, templates=[]))
    with pytest.raises(ValueError, match="align_at"):
        SFTObjective(tiny_adapter, lambda_reca=0.0, lambda_i2t=1.0, lambda_align=1.0, align_at="pixels")
