"""The DeepSpeed trainer on the real engine (CPU accelerator, gloo), single process."""

from __future__ import annotations

import pytest
import torch

from reca.models import registry
from reca.objectives.reca import RecAObjective
from reca.params import TrainParams
from reca.training.batches import BatchPlanner
from reca.training.trainer import Trainer
from reca_fixtures import REPO
from reca_fixtures.models import TEXTS, MemoryTable, build_tiny_adapter, tiny_pixels


class Crash(RuntimeError):
    pass


def _trainer(ckpt, zero_stage, steps=6, crash_at=None, warmup_steps=1, lr_schedule="cosine"):
    adapter = build_tiny_adapter(seed=0)
    adapter.set_frozen(["understanding_encoder", "image_tokenizer"])
    planner = BatchPlanner(batch_size=4, seed=3, cfg_dropout=0.2, templates=TEXTS[2:], instructions=TEXTS[3:],
                           unlabeled=MemoryTable(tiny_pixels(12, seed=1)), captioned=MemoryTable(tiny_pixels(12)))
    if crash_at is not None:
        original = planner.batch

        def batch(step, micro=0):
            if step == crash_at:
                raise Crash(f"simulated kill at step {step}")
            return original(step, micro)

        planner.batch = batch
    optim = TrainParams(steps=steps, batch_size=4, lr=3e-3, warmup_steps=warmup_steps, zero_stage=zero_stage,
                        lr_schedule=lr_schedule,
                        checkpoint_every=3, log_every=1, keep_checkpoints=2)
    objective = RecAObjective(adapter, lambda_reca=1.0, lambda_i2t=1.0, lambda_t2i=1.0)
    return Trainer(objective, planner, optim, ckpt, root=REPO, frozen_parts=("understanding_encoder", "image_tokenizer"))


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path, zero_stage):
    straight = _trainer(tmp_path / "a", zero_stage)
    straight.setup()
    straight.train()
    reference = {k: v.clone() for k, v in straight.objective.state_dict().items()}

    crashed = _trainer(tmp_path / "b", zero_stage, crash_at=4)
    crashed.setup()
    with pytest.raises(Crash):
        crashed.train()
    assert (tmp_path / "b" / "latest").read_text().strip() == "step0000003"

    resumed = _trainer(tmp_path / "b", zero_stage)
    resumed.setup()
    assert resumed.step == 3
    resumed.train()
    for key, value in resumed.objective.state_dict().items():
        assert torch.allclose(value, reference[key], atol=1e-6), key
    assert resumed.engine.get_lr() == straight.engine.get_lr()


@pytest.mark.parametrize(("warmup_steps", "lr_schedule"), [(1, "cosine"), (4, "cosine"), (4, "constant")])
def test_the_first_step_already_trains(tmp_path, warmup_steps, lr_schedule):
    trainer = _trainer(tmp_path / "w", 0, steps=5, warmup_steps=warmup_steps, lr_schedule=lr_schedule)
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.objective.state_dict().items()}
    trainer.optim = trainer.optim.model_copy(update={"steps": 1})
    trainer.train()
    moved = [k for k, v in trainer.objective.state_dict().items() if not torch.equal(v, before[k])]
    assert moved, "the first optimiser step left every weight unchanged"
    assert all("vision_model" not in k for k in moved)  # the frozen encoder stays put


def test_loss_falls_and_history_is_logged(tmp_path):
    trainer = _trainer(tmp_path / "c", 0, steps=12)
    logged = []
    trainer.log_fn = lambda step, m: logged.append((step, m))
    trainer.setup()
    trainer.train()
    assert [s for s, _ in logged] == list(range(1, 13))
    assert logged[-1][1]["loss"] < logged[0][1]["loss"]
    assert {"loss_reca", "loss_i2t", "loss_t2i", "lr", "samples_per_s"} <= set(logged[-1][1])


def test_checkpoints_are_pruned_and_export_loads(tmp_path):
    trainer = _trainer(tmp_path / "d", 0, steps=12)
    trainer.setup()
    trainer.train()
    trainer.save_checkpoint()
    tags = sorted(p.name for p in (tmp_path / "d").glob("step*"))
    assert tags == ["step0000009", "step0000012"]
    # each weight once: the frozen encoder and tokenizer are not copied into resumable checkpoints
    from reca.training.safetensors_checkpoint_engine import load_state

    [states] = (tmp_path / "d" / "step0000012").glob("*model_states*")
    saved = " ".join(load_state(str(states))["module"])
    assert "vision_model" not in saved and "vqmodel" not in saved and "language_model" in saved
    assert not (tmp_path / "d" / "step0000012" / "hf").exists()
    trainer.export(tmp_path / "final")
    loaded = registry.load(tmp_path / "final")
    for (name, a), b in zip(trainer.objective.adapter.state_dict().items(), loaded.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def test_non_finite_losses_are_skipped_then_stop_the_run(tmp_path):
    from reca.training.trainer import NonFiniteLossError

    trainer = _trainer(tmp_path / "e", 0, steps=10)
    trainer.max_nonfinite = 3
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.objective.state_dict().items()}
    original = trainer.objective.forward

    def poisoned(batch):
        loss, terms = original(batch)
        return loss * float("nan"), {**terms, "loss": float("nan")}

    trainer.objective.forward = poisoned
    with pytest.raises(NonFiniteLossError, match="3 consecutive"):
        trainer.train()
    assert trainer.skipped_steps == 3
    for k, v in trainer.objective.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed although every step was skipped"


def test_every_tensor_of_a_batch_reaches_the_device():
    from reca.objectives.reca import CaptionedBatch, ReconstructionBatch, TrainBatch

    batch = TrainBatch(
        reconstruction=ReconstructionBatch(targets=torch.zeros(2, 3, 4, 4), templates=["a", "b"],
                                           drop=torch.zeros(2, dtype=torch.bool), pixels=torch.zeros(2, 3, 4, 4),
                                           features=torch.zeros(2, 1, 8)),
        captioned=CaptionedBatch(pixels=torch.zeros(2, 3, 4, 4), captions=["a", "b"], instructions=["c", "d"],
                                 drop=torch.zeros(2, dtype=torch.bool)))
    moved = batch.to("meta")  # a stand-in device: nothing can be left on the CPU unnoticed

    def tensors(value):
        import dataclasses

        if isinstance(value, torch.Tensor):
            yield value
        elif dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                yield from tensors(getattr(value, f.name))

    found = list(tensors(moved))
    assert len(found) == 6 and all(t.device.type == "meta" for t in found)
    assert moved.reconstruction.templates == ["a", "b"] and batch.captioned.pixels.device.type == "cpu"


def test_the_trainer_hands_the_engine_batches_on_its_device(tmp_path, monkeypatch):
    from reca.objectives.reca import TrainBatch

    trainer = _trainer(tmp_path / "c", 0, steps=2)
    trainer.setup()
    seen = []
    original = TrainBatch.to
    monkeypatch.setattr(TrainBatch, "to", lambda self, device: seen.append(device) or original(self, device))
    trainer.train()
    assert seen and all(device == trainer.engine.device for device in seen)


def test_half_precision_weights_need_the_bf16_engine():
    from reca.training.trainer import check_weights_dtype

    adapter = build_tiny_adapter().to(torch.bfloat16)
    with pytest.raises(ValueError, match="precision: bf16"):
        check_weights_dtype(adapter, {"bf16": {"enabled": False}})
    check_weights_dtype(adapter, {"bf16": {"enabled": True}})
    check_weights_dtype(adapter.float(), {"bf16": {"enabled": False}})


def test_model_dtype_auto_is_float32_on_the_cpu_and_names_load_as_given(tmp_path):
    from reca.models.loading import load_model_dir, weights_dtype
    from reca.params import ModelParams

    assert weights_dtype(ModelParams()) == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    build_tiny_adapter().save_pretrained(tmp_path / "m")
    loaded = load_model_dir(tmp_path / "m", ModelParams(dtype="bfloat16"))
    assert {p.dtype for p in loaded.parameters() if p.is_floating_point()} == {torch.bfloat16}
