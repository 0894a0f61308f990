"""A DeepSpeed checkpoint engine that writes safetensors instead of pickles.

DeepSpeed's default engine saves with ``torch.save`` and loads with
``torch.load(weights_only=False)``, i.e. unpickles arbitrary objects: loading
a checkpoint would run code from it. This engine stores every tensor of a
(possibly nested) state dict in one safetensors file and the structure plus
the non-tensor leaves (ints, strings, tuples, ``torch.Size``, DeepSpeed's loss scalers) as JSON in the
file's metadata. Unknown Python objects are refused at save time with a
message naming their path, never pickled. Files are written atomically.

DeepSpeed still decides what goes in each file and where (ZeRO partitions,
module states, ``latest``); only the serialisation changes.
"""

from __future__ import annotations

import importlib
import json
from collections import OrderedDict
from typing import Any

import torch
from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointCommitInfo, CheckpointEngine
from safetensors import safe_open

from reca.fileio import atomic_path
from reca.safetensors_writer import write_safetensors

_TREE_KEY = "reca_tree"

# Plain-attribute objects DeepSpeed puts in optimizer state (ZeRO stores its loss
# scaler). They are rebuilt from their attribute dict; nothing else is ever
# instantiated from a checkpoint.
_ALLOWED_OBJECTS = {
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.utils.tensor_fragment.fragment_address",
}


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _rebuild(name: str, state: dict[str, Any]) -> Any:
    if name not in _ALLOWED_OBJECTS:
        raise ValueError(f"checkpoint asks for object {name!r}, which is not on the allow-list")
    module, _, cls_name = name.rpartition(".")
    cls = getattr(importlib.import_module(module), cls_name)
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        # clone: safetensors refuses tensors that share storage (ZeRO flat buffers do)
        # a reference, not a copy: the writer streams each tensor's bytes from its storage
        tensors[key] = obj.detach()
        return {"__tensor__": key}
    if isinstance(obj, torch.Size):
        return {"__size__": list(obj)}
    if isinstance(obj, dict):
        keys = list(obj)
        if all(isinstance(k, str) for k in keys):
            return {"__dict__": {k: _encode(v, f"{path}.{k}", tensors) for k, v in obj.items()}}
        # integer keys (optimizer state indexed by parameter id)
        return {"__items__": [[_encode(k, path, tensors), _encode(v, f"{path}[{k}]", tensors)]
                              for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}[{i}]", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}[{i}]", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    if _qualname(obj) in _ALLOWED_OBJECTS:
        return {"__object__": _qualname(obj), "state": _encode(vars(obj), f"{path}.__dict__", tensors)}
    raise TypeError(
        f"checkpoint value at {path} is a {type(obj).__name__}; only tensors, numbers, strings, "
        "lists, tuples and dicts can be stored without pickling"
    )


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__size__" in obj:
        return torch.Size(obj["__size__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__dtype__" in obj:
        return getattr(torch, obj["__dtype__"])
    if "__object__" in obj:
        return _rebuild(obj["__object__"], dict(_decode(obj["state"], tensors)))
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    return OrderedDict((k, _decode(v, tensors)) for k, v in obj["__dict__"].items())


def save_state(state: Any, path: str) -> None:
    """Atomically write a nested state dict as one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, "state", tensors)
    with atomic_path(path) as tmp:
        write_safetensors(tensors, tmp, metadata={_TREE_KEY: json.dumps(tree)})


def load_state(path: str, map_location: Any = None) -> Any:
    """Read a file written by :func:`save_state` (no unpickling)."""
    device = "cpu" if map_location is None or callable(map_location) else str(map_location)
    with safe_open(path, framework="pt", device=device) as fh:
        meta = fh.metadata() or {}
        if _TREE_KEY not in meta:
            raise ValueError(f"{path}: not a reca safetensors checkpoint (no {_TREE_KEY} metadata)")
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open is not a dict
    return _decode(json.loads(meta[_TREE_KEY]), tensors)


class SafetensorsCheckpointEngine(CheckpointEngine):
    """DeepSpeed ``CheckpointEngine`` backed by :func:`save_state` / :func:`load_state`."""

    def __init__(self, config_params: Any = None) -> None:
        super().__init__(config_params)
        self.name = "SafetensorsCheckpointEngine"

    def create(self, info: CheckpointCommitInfo) -> None:
        return None

    def save(self, state_dict: Any, path: str) -> None:
        save_state(state_dict, path)

    def load(self, path: str, map_location: Any = None) -> Any:
        return load_state(path, map_location)

    def commit(self, info: CheckpointCommitInfo) -> bool:
        return True

    def preserves_storage_sharing(self) -> bool:
        # We clone every tensor ourselves; DeepSpeed need not.
        return False
