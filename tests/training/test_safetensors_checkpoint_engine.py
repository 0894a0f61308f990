"""Tests for the pickle-free DeepSpeed checkpoint engine (reca.training.safetensors_checkpoint_engine)."""

from __future__ import annotations

import json
import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from reca.training.safetensors_checkpoint_engine import (  # noqa: E402
    SafetensorsCheckpointEngine,
    load_state,
    save_state,
)


def _state() -> dict:
    buf = torch.arange(12, dtype=torch.float32)
    return {
        "module": {
            "layer.weight": torch.randn(3, 4, generator=torch.Generator().manual_seed(0)),
            "layer.bias": torch.zeros(3, dtype=torch.bfloat16),
            "half_t": buf.view(3, 4).t(),  # non-contiguous view of the shared buffer
        },
        # Two views sharing one storage (ZeRO flat buffers look like this).
        "flat_a": buf[:6],
        "flat_b": buf[6:].view(2, 3),
        "optimizer": {
            "state": {0: {"step": torch.tensor(5), "exp_avg": torch.ones(2)}, 1: {"step": torch.tensor(7)}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.95), "params": [0, 1], "amsgrad": False}],
        },
        "global_steps": 42,
        "lr": 2.5e-4,
        "scale": 1.0,
        "nothing": None,
        "name": "run-α",
        "shape": torch.Size([2, 3]),
        "dtype": torch.bfloat16,
        "nested_tuple": (1, "x", (2.0, None)),
        "mixed_list": [1, "two", 3.0, [torch.tensor([1, 2])], {"k": True}],
        "empty": {},
    }


def _assert_same(a, b, path: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype, path
        assert a.shape == b.shape, path
        assert torch.equal(a, b), path
    elif isinstance(a, torch.Size):
        assert type(b) is torch.Size and a == b, path
    elif isinstance(a, dict):
        assert isinstance(b, dict), path
        assert list(a) == list(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b), path
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert type(a) is type(b), path
        assert a == b, path


def test_round_trip_preserves_nested_structure_and_values(tmp_path: Path) -> None:
    state = _state()
    path = tmp_path / "ckpt.safetensors"
    save_state(state, str(path))
    loaded = load_state(str(path))
    _assert_same(state, loaded)
    # int keys stay ints, tuples stay tuples, dtype stays a dtype
    assert set(loaded["optimizer"]["state"]) == {0, 1}
    assert isinstance(loaded["optimizer"]["param_groups"][0]["betas"], tuple)
    assert loaded["dtype"] is torch.bfloat16


def test_shared_storage_tensors_are_saved_independently(tmp_path: Path) -> None:
    state = _state()
    path = tmp_path / "ckpt.safetensors"
    save_state(state, str(path))
    loaded = load_state(str(path))
    assert torch.equal(loaded["flat_a"], torch.arange(6, dtype=torch.float32))
    assert torch.equal(loaded["flat_b"], torch.arange(6, 12, dtype=torch.float32).view(2, 3))
    assert torch.equal(loaded["module"]["half_t"], torch.arange(12, dtype=torch.float32).view(3, 4).t())


def test_file_is_valid_safetensors_with_tree_metadata(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.safetensors"
    save_state({"w": torch.ones(2, 2), "step": 3}, str(path))
    with safe_open(str(path), framework="pt") as fh:
        keys = list(fh.keys())  # noqa: SIM118 - safe_open is not a dict
        meta = fh.metadata()
        assert len(keys) == 1
        assert torch.equal(fh.get_tensor(keys[0]), torch.ones(2, 2))
    tree = json.loads(meta["reca_tree"])
    assert tree["__dict__"]["step"] == 3


def test_load_never_calls_torch_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.safetensors"
    save_state(_state(), str(path))

    def _forbidden(*args, **kwargs):
        raise AssertionError("torch.load must not be called")

    monkeypatch.setattr(torch, "load", _forbidden)
    _assert_same(_state(), load_state(str(path)))


class _Custom:
    pass


@pytest.mark.parametrize(
    ("state", "where"),
    [
        ({"opt": {"fn": lambda: None}}, "state.opt.fn"),
        ({"items": [1, _Custom()]}, "state.items[1]"),
        ({"groups": {3: {"obj": _Custom()}}}, "state.groups[3].obj"),
        ({"t": (0, object())}, "state.t[1]"),
        ({"s": {1, 2}}, "state.s"),
    ],
)
def test_refuses_arbitrary_objects_naming_their_path(tmp_path: Path, state: dict, where: str) -> None:
    path = tmp_path / "ckpt.safetensors"
    with pytest.raises(TypeError) as info:
        save_state(state, str(path))
    assert f"checkpoint value at {where} " in str(info.value)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no half-written temporary left behind


def test_rejects_safetensors_file_without_tree_metadata(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="reca_tree"):
        load_state(str(path))


def test_rejects_objects_not_on_the_allow_list_at_load(tmp_path: Path) -> None:
    path = tmp_path / "evil.safetensors"
    tree = {"__object__": "os.system", "state": {"__dict__": {}}}
    save_file({"t": torch.zeros(1)}, str(path), metadata={"reca_tree": json.dumps(tree)})
    with pytest.raises(ValueError, match="allow-list"):
        load_state(str(path))


def test_loss_scaler_round_trips_through_allow_list(tmp_path: Path) -> None:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler

    scaler = DynamicLossScaler(
        init_scale=2.0**8, scale_window=10, min_scale=1, delayed_shift=2, consecutive_hysteresis=False
    )
    path = tmp_path / "ckpt.safetensors"
    save_state({"loss_scaler": scaler}, str(path))
    loaded = load_state(str(path))["loss_scaler"]
    assert type(loaded) is DynamicLossScaler
    assert vars(loaded).keys() == vars(scaler).keys()
    _assert_same(dict(vars(scaler)), dict(vars(loaded)))
    assert loaded.cur_scale == 256.0
    assert loaded.scale_window == 10


def test_engine_save_and_load_use_safetensors(tmp_path: Path) -> None:
    engine = SafetensorsCheckpointEngine()
    path = str(tmp_path / "mp_rank_00_model_states.pt")
    state = {"module": {"w": torch.randn(2, 2)}, "global_steps": 1}
    engine.save(state, path)
    with safe_open(path, framework="pt") as fh:
        assert "reca_tree" in fh.metadata()
    _assert_same(state, engine.load(path, map_location=lambda storage, loc: storage))
    assert engine.preserves_storage_sharing() is False
