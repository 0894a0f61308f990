"""An ordered, memory-bounded parallel map over a stream, for the data stages.

`curate` and `degrade` spend their time decoding and resizing images, which
is CPU work that threads cannot share (the GIL), so items go to a pool of
worker processes in chunks. Three properties matter:

* ordered: results come back in input order, so manifests are identical
  whatever the number of workers;
* bounded: only a few chunks per worker are in flight, so a stream of
  millions of items never piles up in memory (``multiprocessing.Pool.imap``
  would read the whole input ahead);
* spawn-safe: workers start with the ``spawn`` method (no inherited locks or
  threads from torch or MLflow), so the mapped function must be a
  module-level function, optionally wrapped in ``functools.partial``.

``workers=1`` runs in the calling process (no pool), which is also what the
tests and small inputs use.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

CHUNKS_IN_FLIGHT_PER_WORKER = 4


def available_cores() -> int:
    """CPU cores this process may run on (respects affinity masks and container CPU sets)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def resolve_workers(workers: int) -> int:
    """``0`` means every available core; any other value is taken as is."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = all cores), got {workers}")
    return available_cores() if workers == 0 else workers


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _apply(fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    return [fn(item) for item in chunk]


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int = 1,
                chunk_size: int = 32) -> Iterator[tuple[T, R]]:
    """Yield ``(item, fn(item))`` for every item, in input order.

    Args:
        fn: a picklable callable (module-level function or ``functools.partial`` of one).
        items: any iterable, consumed lazily.
        workers: processes to use; 1 runs in this process, 0 uses every available core.
        chunk_size: items sent to a worker at a time (amortises inter-process overhead).

    Raises:
        RuntimeError: a worker process died (killed for memory, or a native decoder
            crashed); the message names the first item of the lost chunk.
    """
    workers = resolve_workers(workers)
    if workers == 1:
        for item in items:
            yield item, fn(item)
        return
    pending: deque[tuple[list[T], Future[list[Any]]]] = deque()
    limit = workers * CHUNKS_IN_FLIGHT_PER_WORKER
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        for chunk in _chunks(items, chunk_size):
            pending.append((chunk, executor.submit(_apply, fn, chunk)))
            if len(pending) >= limit:
                yield from _collect(*pending.popleft())
        while pending:
            yield from _collect(*pending.popleft())
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _collect(chunk: list[T], future: Future[list[R]]) -> Iterator[tuple[T, R]]:
    try:
        results = future.result()
    except BrokenProcessPool as err:
        raise RuntimeError(
            f"a worker process died while handling {len(chunk)} items starting at {chunk[0]!r} "
            "(out of memory, or a crash in a native decoder); rerun with workers: 1 to find the item"
        ) from err
    yield from zip(chunk, results, strict=True)
