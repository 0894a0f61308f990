"""`post_sft` (reca.stages.sft.run_post): SFT after RecA for the RecA->SFT ablation, or a pass-through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reca.data.transforms import to_pil
from reca.params import ModelParams, PostSFTParams
from reca.stages import degrade, sft
from reca.training.registration import POINTER, read_pointer, write_pointer
from reca_fixtures.models import TEXTS, TINY, build_tiny_adapter, one_torch_thread, tiny_pixels
from reca_fixtures.tracking import FakeTracker

_single_thread = pytest.fixture(autouse=True)(one_torch_thread)
MODEL = ModelParams(adapter="janus_ar")
REGISTERED = {"name": "reca-test", "version": "3", "run_id": "abc"}


def _captioned_dir(root: Path, n: int = 6) -> Path:
    """A hand-written `degrade` output with a captioned split at the tiny model's 16 px."""
    rows = []
    for i, image in enumerate(tiny_pixels(n, size=16, seed=5)):
        rel = f"captioned/{i:02d}.png"
        for kind in ("understanding", "generation"):
            (root / kind / "captioned").mkdir(parents=True, exist_ok=True)
            to_pil(image).save(root / kind / rel)
        rows.append({"id": rel, "split": "captioned", "sha256": f"{i:064x}", "caption": TEXTS[i % 2],
                     "understanding": f"understanding/{rel}", "generation": f"generation/{rel}"})
    (root / degrade.MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


@pytest.fixture
def reca_model(tmp_path) -> Path:
    path = tmp_path / "reca"
    build_tiny_adapter().save_pretrained(path)
    write_pointer(path, REGISTERED)
    return path


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_zero_steps_pass_the_reca_model_through_with_its_registration(tmp_path, reca_model):
    out = tmp_path / "final"
    result = sft.run_post(PostSFTParams(), MODEL, _captioned_dir(tmp_path / "degraded"), reca_model, out,
                          FakeTracker(), root=tmp_path)
    assert result == {"passed_through": str(reca_model)}
    before, after = _weights(reca_model), _weights(out)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # The same weights: evaluate tags the version `train` registered.
    assert read_pointer(out) == REGISTERED
    assert not (tmp_path / "checkpoints").exists()


def test_steps_train_the_reca_model_on_the_captioned_split(tmp_path, reca_model):
    params = PostSFTParams(steps=4, batch_size=2, warmup_steps=1, log_every=1, checkpoint_every=4, lr=1e-2)
    out = tmp_path / "final"
    tracker = FakeTracker()
    result = sft.run_post(params, MODEL, _captioned_dir(tmp_path / "degraded"), reca_model, out, tracker,
                          root=tmp_path)
    assert {"loss_t2i", "loss_i2t"} <= set(result)
    before, after = _weights(reca_model), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert tracker.params["post_sft.steps"] == 4
    assert len(list((tmp_path / "checkpoints" / "post_sft").glob("*/latest"))) == 1
    # Registration needs an active MLflow run; the pointer of the RecA model is not carried over.
    assert not (out / POINTER).exists()


@pytest.mark.parametrize("align_at", ["word_embeddings", "condition_states"])
def test_the_alignment_term_trains_in_either_space(tmp_path, reca_model, align_at):
    # condition_states compares against the reconstruction condition: the stage must hand out templates
    params = PostSFTParams(steps=2, batch_size=2, warmup_steps=1, log_every=1, checkpoint_every=2,
                           lambda_align=1.0, align_at=align_at)
    result = sft.run_post(params, MODEL, _captioned_dir(tmp_path / "degraded"), reca_model, tmp_path / "final",
                          FakeTracker(), root=tmp_path)
    assert result["loss_align"] > 0


def test_the_reconstruction_term_trains_on_the_captioned_images(tmp_path, reca_model):
    # sft.lambda_reca: the starting model learns the RecA condition (template + h_v) before RecA meets it
    degraded = _captioned_dir(tmp_path / "degraded")

    def post_sft(lambda_reca: float, name: str) -> tuple[dict, dict[str, torch.Tensor]]:
        params = PostSFTParams(steps=2, batch_size=2, warmup_steps=1, log_every=1, checkpoint_every=2, lr=1e-2,
                               lambda_reca=lambda_reca)
        result = sft.run_post(params, MODEL, degraded, reca_model, tmp_path / name, FakeTracker(),
                              root=tmp_path / name)
        return result, _weights(tmp_path / name)

    with_term, weights = post_sft(1.0, "with")
    without, plain_weights = post_sft(0.0, "without")
    assert with_term["loss_reca"] > 0 and "loss_reca" not in without
    assert with_term["loss"] > with_term["loss_t2i"] + with_term["loss_i2t"]
    # the same seed and data order: only the reconstruction gradient tells the two runs apart
    assert any(not torch.equal(weights[k], plain_weights[k]) for k in weights)


def test_zero_steps_need_no_schedule_but_training_does():
    assert not PostSFTParams().trains
    with pytest.raises(ValueError, match="warmup_steps"):
        PostSFTParams(steps=5, warmup_steps=5)
    with pytest.raises(ValueError, match="warmup_steps"):
        PostSFTParams(steps=5, warmup_steps=0)  # DeepSpeed's warmup schedulers refuse 0


def test_sft_learns_and_draws_recas_own_templates(tmp_path, monkeypatch):
    # train.template_file: a model built from scratch must know the bank's words, and SFT's
    # reconstruction term must draw from the bank RecA will use, not from the built-in one
    from reca.inference import unknown_words
    from reca.models import loading as model_loading
    from reca.params import SFTParams

    bank = ("paint zebras again", "copy the quokka picture")
    drawn: list = []
    real_plan = sft.plan_batches
    monkeypatch.setattr(sft, "plan_batches", lambda *a, **kw: drawn.append(kw["templates"]) or real_plan(*a, **kw))
    model = ModelParams(adapter="janus_ar", tiny={**TINY, "kmeans_iters": 2})
    params = SFTParams(steps=2, batch_size=2, warmup_steps=1, log_every=1, checkpoint_every=2, lambda_reca=1.0)
    sft.run(params, model, _captioned_dir(tmp_path / "degraded"), tmp_path / "sft", FakeTracker(),
            root=tmp_path, templates=bank)
    assert drawn == [list(bank)]
    adapter = model_loading.load_model_dir(tmp_path / "sft", model)
    assert unknown_words(adapter, " ".join(bank)) == []
    # the built-in bank's words were not taught: the vocabulary follows the bank given
    assert unknown_words(adapter, "reconstruct") == ["reconstruct"]


def test_train_refuses_templates_its_model_cannot_read(tmp_path, reca_model):
    from reca.params import ParamsError, TrainParams
    from reca.stages import train

    bank = tmp_path / "templates.txt"
    bank.write_text("# mine\nredraw the okapi\n", encoding="utf-8")
    params = TrainParams(steps=2, batch_size=2, warmup_steps=1, template_file=str(bank), lambda_i2t=0.0,
                         lambda_t2i=0.0, use_embedding_cache=False)
    with pytest.raises(ParamsError, match=r"templates\.txt.*\['okapi', 'redraw'\].*reca sft"):
        train.run(params, MODEL, _captioned_dir(tmp_path / "degraded"), reca_model, tmp_path / "emb",
                  tmp_path / "out", FakeTracker(), root=tmp_path)


def test_sft_disabled_hands_on_the_pretrained_directory_byte_for_byte(tmp_path):
    # A published checkpoint in bf16 with its processor files: passing it through must not re-export it in fp32
    # nor drop what the adapter does not read.
    from reca.models.registration import ADAPTER_FILE
    from reca.params import SFTParams

    pretrained = tmp_path / "janus-pro"
    adapter = build_tiny_adapter()
    adapter.model.to(torch.bfloat16)
    adapter.save_pretrained(pretrained)
    (pretrained / ADAPTER_FILE).unlink()
    (pretrained / "processor_config.json").write_text('{"num_image_tokens": 4}\n')
    (pretrained / "chat_template.jinja").write_text("{{ messages }}")
    out = tmp_path / "sft"
    model = ModelParams(adapter="janus_ar", pretrained=str(pretrained))
    result = sft.run(SFTParams(enabled=False), model, _captioned_dir(tmp_path / "degraded"), out, FakeTracker(),
                     root=tmp_path)
    assert result == {"passed_through": str(pretrained)}
    for source in pretrained.rglob("*"):
        if source.is_file():
            assert (out / source.relative_to(pretrained)).read_bytes() == source.read_bytes(), source.name
    assert all(t.dtype == torch.bfloat16 for t in _weights(out).values() if t.is_floating_point())
    assert json.loads((out / ADAPTER_FILE).read_text())["adapter"] == "janus_ar"
