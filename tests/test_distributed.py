"""Tests for reca.distributed: the share of work each rank takes, the merge on rank 0, the process's device."""

from __future__ import annotations

import pytest
import torch

from reca.distributed import Workers, join_workers, process_device


@pytest.mark.parametrize(("count", "world_size"), [(0, 2), (1, 2), (7, 2), (7, 3), (8, 8), (3, 5)])
def test_every_item_goes_to_exactly_one_rank(count: int, world_size: int) -> None:
    shares = [list(Workers(rank, world_size).share(count)) for rank in range(world_size)]
    assert sorted(i for share in shares for i in share) == list(range(count))
    # Round-robin: consecutive items (shards, batches of similar cost) land on different ranks.
    assert all(share == list(range(rank, count, world_size)) for rank, share in enumerate(shares))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_world_of_one_does_everything_and_merges_in_item_order() -> None:
    one = Workers()
    assert one.is_main and list(one.share(4)) == [0, 1, 2, 3]
    assert one.gather({2: "c", 0: "a", 1: "b"}) == ["a", "b", "c"]
    one.barrier()  # no process group needed


def test_a_process_no_launcher_started_is_a_world_of_one_on_the_cpu(monkeypatch) -> None:
    for key in ("MASTER_PORT", "MASTER_ADDR", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # forces the CPU even where a GPU is visible
    assert process_device() == torch.device("cpu")
    workers = join_workers()
    assert (workers.rank, workers.world_size, workers.device) == (0, 1, torch.device("cpu"))
