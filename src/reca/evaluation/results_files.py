"""Find and read the per-image verdicts (``results.jsonl``) that ``reca evaluate`` writes.

Each line is one generated image: ``filename``, ``tag`` (GenEval task),
``correct``, ``reason``, and ``metadata`` (the prompt's GenEval metadata,
stored as a JSON string, as GenEval's own ``results.jsonl`` does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reca.fileio import read_jsonl


def results_file(path: str | Path) -> Path:
    """``path`` itself if it is a file, else the one ``report/<model>/results.jsonl`` below it.

    ``scripts/run_arms.py`` writes one such file per run folder.

    Raises:
        FileNotFoundError: If ``path`` is a folder without exactly one such file.
    """
    path = Path(path)
    if path.is_file():
        return path
    found = sorted(path.glob("report/*/results.jsonl"))
    if len(found) != 1:
        raise FileNotFoundError(f"{path}: expected one report/<model>/results.jsonl, found {len(found)}")
    return found[0]


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``results.jsonl`` (or of the one below a run folder), with ``metadata`` parsed.

    Raises:
        ValueError: Naming the file and line of a malformed row.
    """
    file = results_file(path)
    rows = read_jsonl(file)
    for number, row in enumerate(rows, start=1):
        if isinstance(row.get("metadata"), str):
            try:
                row["metadata"] = json.loads(row["metadata"])
            except json.JSONDecodeError as err:
                raise ValueError(f"{file}: row {number}: metadata is not valid JSON ({err.msg})") from err
    return rows
