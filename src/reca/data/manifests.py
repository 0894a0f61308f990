"""Streaming JSONL manifests: read row by row, write row by row.

The data stages handle millions of rows, so they never build a manifest as a
list: `curate` appends to three manifests as results arrive, `degrade`
streams the curated manifest in and its own out. Files are written inside a
stage's temporary output directory (see :func:`reca.fileio.atomic_dir`),
which is renamed into place only when the stage succeeds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the rows of a JSONL file, naming the file and line of any malformed row."""
    with Path(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err


def count_rows(path: str | Path) -> int:
    """Non-blank lines of a JSONL file, without parsing them."""
    with Path(path).open("rb") as fh:
        return sum(1 for line in fh if line.strip())


class JsonlWriter:
    """Append rows (key-sorted JSON, one per line) to a new file; a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = self.path.open("w", encoding="utf-8")
        self.rows = 0

    def write(self, row: dict[str, Any]) -> None:
        """Append one row."""
        self._fh.write(json.dumps(row, sort_keys=True) + "\n")
        self.rows += 1

    def close(self) -> None:
        """Flush and close the file."""
        self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
