"""Module-level worker functions that spawned processes import (test modules cannot be pickled by reference
under importlib mode)."""

from __future__ import annotations


def times_ten(x: int) -> int:
    """A worker function for the parallel-map tests."""
    return x * 10

def exit_on_seven(x: int) -> int:
    """A worker function that kills its process on item 7 (a decoder crash, an OOM kill)."""
    import os

    if x == 7:
        os._exit(3)
    return x
