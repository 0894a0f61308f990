"""The streaming safetensors writer: ordinary files, sorted headers, no copy of the whole state."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from reca.safetensors_writer import write_safetensors


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    return {
        "weight": torch.randn(3, 4, generator=g),
        "bf16": torch.randn(5, generator=g).to(torch.bfloat16),
        "ids": torch.arange(7, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "transposed": base.t(),  # not contiguous
        "view_a": base[:2],  # two views of one storage: safetensors' own writer refuses them
        "view_b": base[2:],
    }


def test_safetensors_reads_back_every_tensor_and_the_metadata(tmp_path):
    tensors = _tensors()
    write_safetensors(tensors, tmp_path / "a.safetensors", {"key": "k"})
    back = load_file(str(tmp_path / "a.safetensors"))
    assert back.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as fh:
        assert fh.metadata() == {"key": "k"}


def test_the_same_tensors_in_another_order_are_the_same_bytes(tmp_path):
    tensors = _tensors()
    write_safetensors(tensors, tmp_path / "a.safetensors")
    write_safetensors(dict(reversed(list(tensors.items()))), tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    # and the data starts on an 8-byte boundary, as safetensors' own files do
    length = int.from_bytes((tmp_path / "a.safetensors").read_bytes()[:8], "little")
    assert (8 + length) % 8 == 0


_PEAK_SCRIPT = """
import resource, sys, torch
from reca.safetensors_writer import write_safetensors
# views of one storage, as DeepSpeed's flat buffers hand them over: safetensors' own writer
# refuses shared tensors, so callers used to clone the whole state first
flat = torch.randn(64 * 1024 * 1024)
state = {f"t{i}": flat[i * 1024 * 1024:(i + 1) * 1024 * 1024].view(1024, 1024) for i in range(64)}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
write_safetensors(state, sys.argv[1])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_writing_a_256_mib_state_of_shared_views_takes_no_copy_of_it(tmp_path):
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(tmp_path / "s.safetensors")],
                          capture_output=True, text=True, check=True)
    assert int(done.stdout) < 16  # MiB above the state itself (a copy would be 256)
    assert len(load_file(str(tmp_path / "s.safetensors"))) == 64


def test_a_dtype_safetensors_cannot_store_is_refused_by_name(tmp_path):
    with pytest.raises(TypeError, match="z: safetensors cannot store torch.complex64"):
        write_safetensors({"z": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "z.safetensors")
