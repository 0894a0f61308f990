"""Writing safetensors files tensor by tensor, with a sorted header.

``safetensors.torch.save_file`` first turns every tensor into one bytes
object and only then writes: saving a state (weights and Adam moments) costs
a second copy of all of it in memory, and with the defensive clones callers
need against its shared-memory check, a third. This writer computes the
header from shapes alone and streams each tensor's bytes straight from its
storage, so the only extra memory is one tensor made contiguous at a time.

The header's keys are sorted (safetensors' own writer orders them from a hash
map, differently in every process), so the same tensors and metadata are the
same file, byte for byte. Files it writes are ordinary safetensors files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

#: safetensors' dtype names
DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
#: the data section starts on an 8-byte boundary, as safetensors' own writer pads it
ALIGNMENT = 8


def _raw_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes in row-major order, without a copy when it is contiguous on the CPU."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def header_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """The length prefix and JSON header of a file holding ``tensors`` in sorted name order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name]
        if tensor.dtype not in DTYPE_NAMES:
            raise TypeError(f"{name}: safetensors cannot store {tensor.dtype}")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % ALIGNMENT)
    return len(text).to_bytes(8, "little") + text


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path,
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` (not atomically: callers write to a temporary path and rename)."""
    with Path(path).open("wb") as fh:
        fh.write(header_bytes(tensors, metadata))
        for name in sorted(tensors):
            fh.write(_raw_bytes(tensors[name]))
