"""Tests for the per-GPU memory plan (reca.training.memory_plan), on numbers checked by hand."""

from __future__ import annotations

import pytest

from reca.training.memory_plan import (
    GIB,
    DecoderStack,
    OutputHead,
    TrainingShape,
    activation_bytes,
    layer_activation_bytes,
    max_micro_batch,
    model_state_bytes,
    plan_memory,
)

TINY = DecoderStack(layers=2, hidden=4, intermediate=8, heads=2, sequences=(3, 5))


def states(precision: str, stage: int, world: int = 8, largest: int = 0) -> dict[str, float]:
    return model_state_bytes(1000, 100, precision=precision, zero_stage=stage, world_size=world,
                             largest_layer=largest)


def test_bf16_states_follow_the_table_and_zero_divides_them_stage_by_stage() -> None:
    # 2 B weights; 2 B bf16 grads + 4 B fp32 copy; 4 B master + 8 B Adam; 4 B sqrt(v); frozen: 2 B weights only
    assert states("bf16", 0) == {"weights": 2200, "gradients": 6000, "optimizer": 12000, "temporaries": 4000}
    # ZeRO-1: optimizer states, fp32 gradient copy and temporaries over 8 GPUs
    assert states("bf16", 1) == {"weights": 2200, "gradients": 2000 + 500, "optimizer": 1500, "temporaries": 500}
    # ZeRO-2: the bf16 gradients too
    assert states("bf16", 2) == {"weights": 2200, "gradients": 250 + 500, "optimizer": 1500, "temporaries": 500}
    # ZeRO-3: the trainable weights too, plus the gathered largest layer; frozen weights stay whole
    assert states("bf16", 3, largest=50) == {"weights": 250 + 200 + 100, "gradients": 750, "optimizer": 1500,
                                             "temporaries": 500}


def test_fp32_without_zero_is_torch_adamw_16_bytes_per_parameter() -> None:
    s = states("fp32", 0)
    assert (s["weights"] - 400, s["gradients"], s["optimizer"]) == (4000, 4000, 8000)
    # ZeRO >= 1 in fp32: DeepSpeed's own fp32 partition and flat gradient copy, 4 B each, over the world
    assert states("fp32", 2) == {"weights": 4400, "gradients": 500 + 500, "optimizer": 1500, "temporaries": 500}


def test_world_of_one_divides_nothing() -> None:
    assert states("bf16", 2, world=1) == {"weights": 2200, "gradients": 6000, "optimizer": 12000, "temporaries": 4000}


def test_layer_activations_of_a_janus_pro_1b_layer() -> None:
    # 8h + 9·e·h + 4·e·i: 26·2048 + 8·5504 in bf16, 44·2048 + 16·5504 in fp32
    assert layer_activation_bytes(2048, 5504, precision="bf16") == 53248 + 44032 == 97280
    assert layer_activation_bytes(2048, 5504, precision="fp32") == 90112 + 88064


def test_activations_scale_with_layers_tokens_and_micro_batch() -> None:
    per_token = 26 * 4 + 8 * 8  # 168 B in bf16
    assert activation_bytes(TINY, (), micro_batch=1, precision="bf16") == 2 * 8 * per_token
    assert activation_bytes(TINY, (), micro_batch=2, precision="bf16") == 2 * 2 * 8 * per_token


def test_eager_attention_adds_the_probabilities_of_every_sequence() -> None:
    scores = (4 + 2) * 2 * (3 * 3 + 5 * 5)  # fp32 probabilities and their bf16 cast, per head, per layer
    assert activation_bytes(TINY, (), micro_batch=1, precision="bf16", eager_attention=True) == 2 * (8 * 168 + scores)


def test_checkpointing_keeps_layer_inputs_and_recomputes_the_longest_pass_of_one_layer() -> None:
    assert activation_bytes(TINY, (), micro_batch=1, precision="bf16", checkpointing=True) == 2 * 2 * 4 * 8 + 5 * 168


def test_heads_keep_fp32_log_probs_and_the_largest_needs_its_logits_and_gradients() -> None:
    heads = (OutputHead("a", tokens=3, outputs=10), OutputHead("b", tokens=2, outputs=100))
    stackless = DecoderStack(layers=0, hidden=4, intermediate=8, heads=2, sequences=(1,))
    assert activation_bytes(stackless, heads, micro_batch=1, precision="bf16") == 4 * (30 + 200) + (4 + 4) * 200


def test_planned_peak_holds_the_larger_of_activations_and_step_temporaries() -> None:
    shape = TrainingShape(trainable=1000, frozen=100, largest_layer=0, stack=TINY)
    plan = plan_memory(shape, precision="bf16", zero_stage=0, world_size=1, micro_batch=1)
    assert plan.activations == 2688 < plan.temporaries == 4000
    assert plan.total == 2200 + 6000 + 12000 + 4000
    busy = plan_memory(shape, precision="bf16", zero_stage=0, world_size=1, micro_batch=2)
    assert busy.total == 2200 + 6000 + 12000 + 2 * 2688


def test_janus_pro_7b_needs_zero_to_fit_on_80_gib() -> None:
    shape = TrainingShape(trainable=7_032_000_000, frozen=376_000_000, largest_layer=419_430_400,
                          stack=DecoderStack(layers=30, hidden=4096, intermediate=11008, heads=32,
                                             sequences=(1163, 609)))
    capacity = 80 * GIB
    zero0 = plan_memory(shape, precision="bf16", zero_stage=0, world_size=8, micro_batch=1)
    zero3 = plan_memory(shape, precision="bf16", zero_stage=3, world_size=8, micro_batch=1)
    assert zero0.weights + zero0.gradients + zero0.optimizer == pytest.approx(7.032e9 * 20 + 0.376e9 * 2)
    assert not zero0.fits(capacity) and zero3.fits(capacity)
    assert max_micro_batch(shape, capacity, precision="bf16", zero_stage=0, world_size=8) == 0


def test_max_micro_batch_is_the_room_left_by_the_states_over_one_samples_activations() -> None:
    shape = TrainingShape(trainable=1000, frozen=100, largest_layer=0, stack=TINY)
    # states 2200 + 6000 + 12000 = 20200 B; one sample's activations 2688 B; temporaries 4000 B must fit too
    assert max_micro_batch(shape, 20200 + 10 * 2688 + 5, precision="bf16", zero_stage=0, world_size=1) == 10
    assert max_micro_batch(shape, 20200 + 3999, precision="bf16", zero_stage=0, world_size=1) == 0


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"precision": "fp16"}, "precision"),
    ({"zero_stage": 4}, "zero_stage"),
    ({"world_size": 0}, "world_size"),
    ({"micro_batch": 0}, "micro_batch"),
])
def test_bad_settings_are_errors_naming_the_setting(kwargs: dict, named: str) -> None:
    shape = TrainingShape(trainable=1000, frozen=100, largest_layer=0, stack=TINY)
    settings = {"precision": "bf16", "zero_stage": 2, "world_size": 8, "micro_batch": 1, **kwargs}
    with pytest.raises(ValueError, match=named):
        plan_memory(shape, **settings)
