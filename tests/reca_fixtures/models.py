"""Tiny random-weight models, their images and texts, and the adapter-protocol checks every adapter passes."""

from __future__ import annotations

from reca_fixtures import REPO

TINY = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 64,
    "vision_hidden_size": 32,
    "vision_layers": 1,
    "vision_heads": 2,
    "image_size": 16,
    "vision_patch_size": 8,
    "codebook_size": 64,
    "token_patch_size": 4,
}

TEXTS = [
    "a red circle",
    "a blue square left of a yellow triangle",
    "describe the image in detail .",
    "write a short caption for this image .",
]

def tiny_pixels(n: int = 8, size: int = 16, seed: int = 0):
    """Flat-coloured blocks: few distinct patches, so a small codebook is exact."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 3, size, size), 0.0)
    for i in range(n):
        colour = torch.rand(3, 1, 1, generator=g) * 2 - 1
        s = int(torch.randint(0, size // 2, (1,), generator=g))
        x[i, :, s : s + size // 2, s : s + size // 2] = colour
    return x

class MemoryTable:
    """An in-memory stand-in for :class:`reca.data.dataset.ImageTable` (same three methods)."""

    def __init__(self, pixels, captions=None):
        self.x = pixels
        self.rows = [{"id": str(i), "caption": (captions or TEXTS[:2])[i % len(captions or TEXTS[:2])]}
                     for i in range(len(pixels))]

    def __len__(self):
        return len(self.rows)

    def pixels(self, indices, kind):
        return self.x[list(indices)]

    def captions(self, indices):
        return [self.rows[i]["caption"] for i in indices]

    def ids(self, indices):
        return [self.rows[i]["id"] for i in indices]

def build_tiny_adapter(seed: int = 0, image_tokenizer: str = "patch_kmeans"):
    """The tiny Janus (the default world's adapter) that most tests train."""
    return build_adapter("janus_ar", seed=seed, image_tokenizer=image_tokenizer)

def one_torch_thread():
    """Generator for a fixture: torch on one thread for the test, restored after.

    Tiny models gain nothing from intra-op threads, and on a busy 2-core
    machine OpenMP's spin-waiting made the adapter tests 5-10x slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

def reca_condition(adapter, pixels, drop=None, template: str = TEXTS[2]):
    """The RecA condition: a reconstruction template plus the adapter's own h_v of ``pixels``."""
    from reca.models.base import Condition

    return Condition(texts=[template] * len(pixels), image_embeddings=adapter.embed_images(pixels), drop=drop)

def eval_reca_loss(adapter, pixels, condition_pixels=None, drop=None) -> float:
    """The RecA generation loss in eval mode (no gradients), conditioned on h_v of ``condition_pixels``."""
    import torch

    was_training = adapter.training
    adapter.eval()
    with torch.no_grad():
        condition = reca_condition(adapter, pixels if condition_pixels is None else condition_pixels, drop)
        loss = adapter.generation_loss(condition, pixels).item()
    adapter.train(was_training)
    return loss

def overfit_reca_loss(adapter, pixels, *, steps: int, lr: float) -> tuple[float, float]:
    """Eval-mode RecA loss before and after ``steps`` AdamW steps on one batch (default freezing)."""
    import torch

    adapter.set_frozen(["understanding_encoder", "image_tokenizer"])
    before = eval_reca_loss(adapter, pixels)
    adapter.train()
    opt = torch.optim.AdamW(adapter.trainable_parameters(), lr=lr)
    for _ in range(steps):
        loss = adapter.generation_loss(reca_condition(adapter, pixels), pixels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, eval_reca_loss(adapter, pixels)

def assert_gradients_reach_exactly_the_trainable_parameters(adapter, frozen, pixels) -> None:
    """RecA + i2t backward: every frozen parameter gets no gradient, every other one gets one."""
    adapter.set_frozen(frozen)
    adapter.train()
    adapter.zero_grad(set_to_none=True)
    loss = adapter.generation_loss(reca_condition(adapter, pixels), pixels)
    loss = loss + adapter.i2t_loss(pixels, [TEXTS[3]] * len(pixels), [TEXTS[0]] * len(pixels))
    loss.backward()
    frozen_ids = {id(p) for name in frozen for p in adapter.parts()[name].parameters()}
    for name, p in adapter.named_parameters():
        if id(p) in frozen_ids:
            assert p.grad is None and not p.requires_grad, f"frozen parameter {name} received a gradient"
        else:
            assert p.grad is not None, f"trainable parameter {name} received no gradient"
    for part, module in adapter.parts().items():
        if part not in frozen and any(True for _ in module.parameters()):
            assert any(p.grad.abs().sum() > 0 for p in module.parameters()), f"{part} got only zero gradients"

def assert_round_trip_reproduces_losses(adapter, directory, pixels):
    """save_pretrained -> registry.load gives the same adapter class, losses and encoder fingerprint."""
    import torch

    from reca.models import registry

    adapter.eval()
    before = eval_reca_loss(adapter, pixels)
    with torch.no_grad():
        before_i2t = adapter.i2t_loss(pixels, [TEXTS[3]] * len(pixels), [TEXTS[0]] * len(pixels))
    adapter.save_pretrained(directory)
    loaded = registry.load(directory).eval()
    assert type(loaded) is type(adapter)
    assert abs(eval_reca_loss(loaded, pixels) - before) < 1e-5
    with torch.no_grad():
        assert torch.allclose(loaded.i2t_loss(pixels, [TEXTS[3]] * len(pixels), [TEXTS[0]] * len(pixels)),
                              before_i2t, atol=1e-5)
    assert loaded.encoder_fingerprint() == adapter.encoder_fingerprint()
    return loaded

def assert_generates_seeded_images_of_generation_size(adapter, guidance_scale: float = 3.0) -> None:
    """Guided text-to-image: (B, 3, S, S) in [-1, 1], identical for identical generator seeds."""
    import torch

    adapter.eval()
    outs = [adapter.text_to_image([TEXTS[0], TEXTS[1]], guidance_scale=guidance_scale,
                                  generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    assert outs[0].shape == (2, 3, adapter.generation_size, adapter.generation_size)
    assert torch.equal(outs[0], outs[1])
    assert outs[0].min() >= -1 and outs[0].max() <= 1

def assert_condition_dropout_ignores_text_and_image(adapter, pixels, other_pixels) -> None:
    """A dropped condition gives the same loss whatever its h_v; a kept one depends on h_v."""
    import torch

    drop = torch.ones(len(pixels), dtype=torch.bool)
    dropped = eval_reca_loss(adapter, pixels, drop=drop)
    assert dropped == eval_reca_loss(adapter, pixels, condition_pixels=other_pixels, drop=drop)
    kept = eval_reca_loss(adapter, pixels, condition_pixels=other_pixels)
    assert kept != dropped
    assert kept != eval_reca_loss(adapter, pixels)

def default_tiny_params(adapter_name: str):
    """``model.tiny`` of the repository's params.yaml, validated for ``adapter_name`` (one-key switch)."""
    from reca.models.model_params import resolve_model_params
    from reca.params import ModelParams, load_raw

    raw = load_raw(REPO / "params.yaml")["model"]
    return resolve_model_params(ModelParams.model_validate({**raw, "adapter": adapter_name})).tiny

FLOW_TINY = {
    "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
    "vision_hidden_size": 32, "vision_layers": 1, "vision_heads": 2, "image_size": 16, "vision_patch_size": 8,
    "token_patch_size": 4, "decoding_steps": 4, "num_queries": 4, "connector_layers": 1, "connector_width": 32,
    "connector_heads": 2, "transformer_layers": 2, "transformer_heads": 2, "transformer_head_dim": 16,
}

#: adapter name -> (model.tiny of its tiny test configuration, default image tokenizer, images its tokenizer fits)
TINY_ADAPTERS = {
    "janus_ar": ({**TINY, "kmeans_iters": 3}, "patch_kmeans", 16),
    "showo_masked": ({**TINY, "kmeans_iters": 3, "decoding_steps": 4}, "patch_kmeans", 16),
    "harmon_mar": ({**TINY, "head_width": 32, "head_layers": 2, "decoding_steps": 4, "sampling_steps": 4},
                   "patch_latents", 16),
    "flow_matching": (FLOW_TINY, "patch_kmeans", 4),
}

def build_adapter(name: str, seed: int = 0, image_tokenizer: str | None = None, **tiny_overrides):
    """The tiny random-weight test configuration of the adapter registered as ``name``."""
    from reca.models import registry

    tiny, default_tokenizer, images = TINY_ADAPTERS[name]
    cls = registry.get(name)
    return cls.build_from_scratch(cls.tiny_params(**{**tiny, **tiny_overrides}), texts=TEXTS,
                                  images=tiny_pixels(images), seed=seed,
                                  image_tokenizer=image_tokenizer or default_tokenizer)
