"""Tests for the ordered, bounded process-pool map (reca.data.parallel)."""

from __future__ import annotations

import pytest

from reca.data import parallel
from reca.data.parallel import ordered_map, resolve_workers
from reca_fixtures.workers import exit_on_seven, times_ten


def test_results_come_back_in_input_order_from_worker_processes() -> None:
    out = list(ordered_map(times_ten, range(200), workers=2, chunk_size=7))
    assert out == [(i, i * 10) for i in range(200)]


def test_input_is_read_lazily_a_few_chunks_ahead(monkeypatch) -> None:
    pulled = []

    def stream():
        for i in range(10_000):
            pulled.append(i)
            yield i

    monkeypatch.setattr(parallel, "CHUNKS_IN_FLIGHT_PER_WORKER", 2)
    results = ordered_map(times_ten, stream(), workers=2, chunk_size=5)
    assert next(results) == (0, 0)
    # 2 workers x 2 chunks x 5 items are in flight when the first result is taken.
    assert len(pulled) <= 2 * 2 * 5 + 5
    results.close()


def test_one_worker_runs_in_process_without_pickling() -> None:
    seen = []
    out = list(ordered_map(lambda x: seen.append(x) or -x, [3, 1, 2], workers=1))
    assert out == [(3, -3), (1, -1), (2, -2)] and seen == [3, 1, 2]


def test_a_dead_worker_is_an_error_naming_the_items() -> None:
    with pytest.raises(RuntimeError, match="worker process died.*starting at 5"):
        list(ordered_map(exit_on_seven, range(20), workers=2, chunk_size=5))


def test_zero_workers_means_every_available_core(monkeypatch) -> None:
    monkeypatch.setattr(parallel, "available_cores", lambda: 6)
    assert resolve_workers(0) == 6
    assert resolve_workers(3) == 3
    with pytest.raises(ValueError, match=">= 0"):
        resolve_workers(-1)
