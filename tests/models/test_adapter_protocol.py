"""The adapter protocol, written once and run over every registered adapter.

Each adapter (``reca.models.registry.available()``) is built from its tiny
test configuration (``reca_fixtures.models.TINY_ADAPTERS``) with random weights and
must behave the same way through the interface the RecA objective is written
against: losses that train, gradients that respect the freezing policy, a
round trip through its own directory format, seeded generation, condition
dropout, editing. Three training steps from a fixed initialisation on a fixed
batch pin each adapter's loss values, so a refactor is proved to change
nothing (recorded before issue #17's refactor, bit for bit on the machine that
recorded them).
"""

from __future__ import annotations

import pytest
import torch

from reca.models import registry
from reca.models.base import Condition
from reca.objectives.reca import CaptionedBatch, RecAObjective, ReconstructionBatch, TrainBatch
from reca.objectives.sft import SFTObjective
from reca_fixtures.models import (
    TEXTS,
    TINY_ADAPTERS,
    assert_condition_dropout_ignores_text_and_image,
    assert_generates_seeded_images_of_generation_size,
    assert_gradients_reach_exactly_the_trainable_parameters,
    assert_round_trip_reproduces_losses,
    build_adapter,
    one_torch_thread,
    overfit_reca_loss,
    tiny_pixels,
)

ADAPTERS = registry.available()
_single_thread = pytest.fixture(autouse=True)(one_torch_thread)

#: adapter -> (AdamW steps on one batch, learning rate, largest eval-loss ratio after/before)
OVERFIT = {
    "janus_ar": (60, 3e-3, 0.5),
    "showo_masked": (40, 3e-3, 0.5),
    "harmon_mar": (60, 3e-3, 0.5),
    # the eval-mode loss uses fixed noise and times; training draws fresh ones every step
    "flow_matching": (40, 1e-2, 0.6),
}

#: three AdamW steps (lr 1e-3, only the image tokenizer frozen) of λ_reca = λ_i2t = λ_t2i = 1 from seed 0 on
#: :func:`_fixed_batch`; the ``+align`` rows are the SFT objective with its alignment term
PINNED_LOSSES = {
    "janus_ar": [
        {"loss_reca": 4.1595892906188965, "loss_i2t": 3.4362258911132812, "loss_t2i": 4.155807018280029, "loss": 11.751622200012207},
        {"loss_reca": 4.144896984100342, "loss_i2t": 3.3360955715179443, "loss_t2i": 4.145391941070557, "loss": 11.626384735107422},
        {"loss_reca": 4.134451389312744, "loss_i2t": 3.264719247817993, "loss_t2i": 4.136288166046143, "loss": 11.535459518432617},
    ],
    "showo_masked": [
        {"loss_reca": 4.328857421875, "loss_i2t": 3.3744184970855713, "loss_t2i": 4.441374778747559, "loss": 12.14465045928955},
        {"loss_reca": 4.369853973388672, "loss_i2t": 3.284762144088745, "loss_t2i": 4.315523624420166, "loss": 11.97014045715332},
        {"loss_reca": 4.276010990142822, "loss_i2t": 3.2081918716430664, "loss_t2i": 4.232857704162598, "loss": 11.717060089111328},
    ],
    "harmon_mar": [
        {"loss_reca": 1.4413914680480957, "loss_i2t": 3.3759732246398926, "loss_t2i": 1.4619700908660889, "loss": 6.279335021972656},
        {"loss_reca": 1.3939580917358398, "loss_i2t": 3.2861249446868896, "loss_t2i": 1.3867363929748535, "loss": 6.066819667816162},
        {"loss_reca": 1.3519885540008545, "loss_i2t": 3.207134485244751, "loss_t2i": 1.3557860851287842, "loss": 5.914909362792969},
    ],
    "flow_matching": [
        {"loss_reca": 1.3833881616592407, "loss_i2t": 3.4254379272460938, "loss_t2i": 1.4683250188827515, "loss": 6.277151107788086},
        {"loss_reca": 1.310940146446228, "loss_i2t": 3.3391664028167725, "loss_t2i": 1.271782398223877, "loss": 5.921888828277588},
        {"loss_reca": 1.254243016242981, "loss_i2t": 3.272667407989502, "loss_t2i": 1.2780183553695679, "loss": 5.804928779602051},
    ],
    "janus_ar+align": [
        {"loss_align": 3.1427676677703857, "loss_i2t": 3.4362258911132812, "loss_t2i": 4.155807018280029, "loss": 9.163416862487793},
        {"loss_align": 0.9338985681533813, "loss_i2t": 3.3742589950561523, "loss_t2i": 4.145042896270752, "loss": 7.986250877380371},
        {"loss_align": 0.8040339946746826, "loss_i2t": 3.3130147457122803, "loss_t2i": 4.1357197761535645, "loss": 7.8507513999938965},
    ],
    "janus_ar+align_states": [
        {"loss_reca": 4.1595892906188965, "loss_align": 1.388575553894043, "loss_t2i": 4.155807018280029, "loss": 9.009683609008789},
        {"loss_reca": 4.138026237487793, "loss_align": 1.2337292432785034, "loss_t2i": 4.142974853515625, "loss": 8.897865295410156},
        {"loss_reca": 4.129162788391113, "loss_align": 0.8404563665390015, "loss_t2i": 4.134560585021973, "loss": 8.683951377868652},
    ],
}
#: the objective and weights behind each pinned row
PINNED_RUNS = {
    **{name: (name, RecAObjective, {"lambda_reca": 1.0, "lambda_i2t": 1.0, "lambda_t2i": 1.0}) for name in ADAPTERS},
    "janus_ar+align": ("janus_ar", SFTObjective,
                       {"lambda_reca": 0.0, "lambda_i2t": 1.0, "lambda_t2i": 1.0, "lambda_align": 0.5}),
    "janus_ar+align_states": ("janus_ar", SFTObjective, {"lambda_reca": 1.0, "lambda_i2t": 0.0, "lambda_t2i": 1.0,
                                                         "lambda_align": 0.5, "align_at": "condition_states"}),
}


@pytest.fixture(params=ADAPTERS)
def adapter(request):
    return build_adapter(request.param)


def test_every_registered_adapter_has_a_tiny_configuration_and_pinned_losses():
    assert set(ADAPTERS) == set(TINY_ADAPTERS) == set(OVERFIT)
    assert set(ADAPTERS) <= set(PINNED_LOSSES)


def test_reca_loss_falls_when_overfitting_one_batch(adapter):
    steps, lr, ratio = OVERFIT[adapter.name]
    before, after = overfit_reca_loss(adapter, tiny_pixels(4, seed=1), steps=steps, lr=lr)
    assert after < ratio * before


def test_gradients_reach_exactly_the_trainable_parameters(adapter):
    assert_gradients_reach_exactly_the_trainable_parameters(adapter, ["understanding_encoder", "image_tokenizer"],
                                                            tiny_pixels(3))


def test_understanding_encoder_trains_when_unfrozen(adapter):
    assert_gradients_reach_exactly_the_trainable_parameters(adapter, ["image_tokenizer"], tiny_pixels(2))


def test_save_load_round_trip_reproduces_the_losses(adapter, tmp_path):
    loaded = assert_round_trip_reproduces_losses(adapter, tmp_path / "m", tiny_pixels(3))
    assert (loaded.generation_size, loaded.understanding_size) == (adapter.generation_size,
                                                                   adapter.understanding_size)


def test_generated_images_have_generation_size_and_are_seeded(adapter):
    assert_generates_seeded_images_of_generation_size(adapter)


def test_condition_dropout_ignores_text_and_image(adapter):
    assert_condition_dropout_ignores_text_and_image(adapter, tiny_pixels(2), tiny_pixels(2, seed=5))


def test_edit_generates_from_the_source_images_h_v(adapter):
    # A random tiny model samples almost the same image whatever its condition (near-uniform logits), so the
    # check is that editing is generation from [instruction + h_v of the source], and that h_v moves the loss.
    adapter.eval()
    instructions = ["make it red", "make it blue"]
    sources = [tiny_pixels(2), tiny_pixels(2, seed=7)]
    edited = adapter.edit(sources[0], instructions, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        conditions = [Condition(texts=instructions, image_embeddings=adapter.embed_images(p)) for p in sources]
        direct = adapter.generate(conditions[0], generator=torch.Generator().manual_seed(0))
        losses = [adapter.generation_loss(c, sources[0]) for c in conditions]
    assert edited.shape == (2, 3, adapter.generation_size, adapter.generation_size)
    assert torch.allclose(edited, direct, atol=1e-5)  # edit runs with autograd on: other kernels, same maths
    assert not torch.equal(losses[0], losses[1])


def _fixed_batch(n: int = 4) -> TrainBatch:
    reconstruction = ReconstructionBatch(targets=tiny_pixels(n, seed=1), templates=[TEXTS[2]] * n,
                                         drop=torch.tensor([False, True, False, False]), pixels=tiny_pixels(n, seed=3))
    captioned = CaptionedBatch(pixels=tiny_pixels(n, seed=2), captions=[TEXTS[0], TEXTS[1]] * (n // 2),
                               instructions=[TEXTS[3]] * n, drop=torch.tensor([False, False, True, False]),
                               templates=[TEXTS[2]] * n)
    return TrainBatch(reconstruction=reconstruction, captioned=captioned)


def three_steps(run: str) -> list[dict[str, float]]:
    """Each term of three AdamW steps of the pinned run ``run``, from a fixed initialisation."""
    name, objective_class, weights = PINNED_RUNS[run]
    torch.manual_seed(0)
    adapter = build_adapter(name)
    adapter.set_frozen(["image_tokenizer"])
    objective = objective_class(adapter, **weights)
    optimizer = torch.optim.AdamW(adapter.trainable_parameters(), lr=1e-3)
    batch = _fixed_batch()
    values = []
    for step in range(3):
        torch.manual_seed(100 + step)  # what the trainer does: noise and masks drawn from (seed, step)
        total, terms = objective(batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        values.append({key: float(value) for key, value in terms.items()})
    return values


@pytest.mark.parametrize("run", sorted(PINNED_RUNS))
def test_three_training_steps_reproduce_the_pinned_losses(run):
    measured = three_steps(run)
    for step, (got, pinned) in enumerate(zip(measured, PINNED_LOSSES[run], strict=True)):
        assert set(got) == set(pinned), f"step {step}: terms {sorted(got)} != {sorted(pinned)}"
        for term, value in pinned.items():
            # bit for bit on the recording machine; 1e-5 leaves room for another CPU's kernels only
            assert got[term] == pytest.approx(value, rel=1e-5), f"{run} step {step} {term}"


def test_activation_checkpointing_recomputes_blocks_and_changes_no_number(adapter):
    # Recomputed in backward: more module calls per step, the same loss and the same gradients.
    adapter.set_frozen(["image_tokenizer"])
    adapter.train()

    def step():
        calls = []
        hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in adapter.modules()]
        adapter.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        total, _ = RecAObjective(adapter, lambda_reca=1.0, lambda_i2t=1.0, lambda_t2i=1.0)(_fixed_batch())
        total.backward()
        for hook in hooks:
            hook.remove()
        grads = {n: p.grad.clone() for n, p in adapter.named_parameters() if p.grad is not None}
        return total.detach(), grads, len(calls)

    plain_loss, plain_grads, plain_calls = step()
    adapter.enable_activation_checkpointing()
    loss, grads, calls = step()
    assert calls > plain_calls
    assert torch.allclose(loss, plain_loss, rtol=1e-6)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, plain_grads[name], rtol=1e-4, atol=1e-7), name


def test_loads_every_weight_straight_into_the_requested_dtype(adapter, tmp_path):
    adapter.save_pretrained(tmp_path / "m")
    loaded = registry.load(tmp_path / "m", dtype=torch.bfloat16)
    kinds = {name: p.dtype for name, p in loaded.named_parameters() if p.is_floating_point()}
    assert set(kinds.values()) == {torch.bfloat16}, {n: d for n, d in kinds.items() if d != torch.bfloat16}
    pixels = tiny_pixels(2)
    with torch.no_grad():
        condition = Condition(texts=[TEXTS[2]] * 2, image_embeddings=loaded.embed_images(pixels))
        assert torch.isfinite(loaded.eval().generation_loss(condition, pixels))
    images = loaded.text_to_image([TEXTS[0]], generator=torch.Generator().manual_seed(0))
    assert images.shape == (1, 3, loaded.generation_size, loaded.generation_size)


def test_the_eager_attention_kernel_gives_the_sdpa_losses(adapter, tmp_path):
    # The attention implementation is a load option; whichever kernel runs, the image-block masks (causal text,
    # bidirectional image for the masked and MAR adapters) must be the same masks.
    adapter.save_pretrained(tmp_path / "m")
    pixels = tiny_pixels(2)
    losses = []
    for kernel in ("sdpa", "eager"):
        loaded = registry.load(tmp_path / "m", attn_implementation=kernel).eval()
        with torch.no_grad():
            condition = Condition(texts=[TEXTS[2]] * 2, image_embeddings=loaded.embed_images(pixels))
            losses.append(loaded.generation_loss(condition, pixels))
    assert torch.allclose(losses[0], losses[1], atol=1e-5)


def test_flash_attention_without_its_package_is_a_params_error():
    import importlib.util

    from reca.params import ParamsError, parse_section

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(ParamsError, match="flash-attn"):
        parse_section("model", {"attn_implementation": "flash_attention_2"})
