"""Tests for the great_expectations suite over curate's outputs (reca.data.expectations)."""

from __future__ import annotations

import json
from pathlib import Path

from reca.data.expectations import validate_outputs
from reca.params import CurateParams

FILES = {"curated": "manifest.jsonl", "quarantined": "quarantine.jsonl", "duplicates": "duplicates.jsonl"}
PARAMS = CurateParams(min_side=16, max_aspect_ratio=4.0, max_pixels=10_000)


def _row(i: int, **overrides) -> dict:
    row = {"id": f"unlabeled/{i}.png", "path": f"unlabeled/{i}.png", "split": "unlabeled", "sha256": f"{i:064x}",
           "phash": f"{i:016x}", "width": 32, "height": 48, "mode": "RGB", "format": "PNG"}
    return {**row, **overrides}


def _write(out: Path, manifest: list[dict], quarantine: int = 1, duplicates: int = 0, report: dict | None = None):
    out.mkdir(parents=True, exist_ok=True)
    rows = {"manifest.jsonl": manifest,
            "quarantine.jsonl": [{"path": f"q{i}", "reason": "corrupt", "detail": "d"} for i in range(quarantine)],
            "duplicates.jsonl": [{"path": f"d{i}", "duplicate_of": "x"} for i in range(duplicates)]}
    for name, content in rows.items():
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in content), encoding="utf-8")
    counts = {"curated": len(manifest), "quarantined": quarantine, "duplicates": duplicates}
    return {"inputs": sum(counts.values()), **counts, **(report or {})}


def _failed(result: dict) -> str:
    return " | ".join(result["failed"])


def test_clean_outputs_pass_with_results_for_both_batches(tmp_path: Path) -> None:
    report = _write(tmp_path, [_row(1), _row(2, split="captioned", caption="a cat", mode="P", format="GIF")])
    result = validate_outputs(PARAMS, tmp_path, report, FILES)
    assert result["success"] is True, _failed(result)
    assert set(result["results"]) == {"manifest", "report"}
    assert result["results"]["manifest"]["statistics"]["unsuccessful_expectations"] == 0
    json.dumps(result)  # what curate saves as validation.json


BROKEN = {
    # rule -> (a row breaking it, text naming it in the failures)
    "dup-id": (_row(1, sha256="e" * 64, phash="e" * 16), "expect_column_values_to_be_unique"),
    "dup-sha": (_row(2, sha256=_row(1)["sha256"]), '"column": "sha256"'),
    "sha-format": (_row(3, sha256="XYZ"), "expect_column_values_to_match_regex"),
    "phash-format": (_row(4, phash="123"), '"column": "phash"'),
    "small": (_row(5, width=8), '"column": "short_side"'),
    "aspect": (_row(6, width=16, height=80), '"column": "aspect"'),
    "bomb": (_row(7, width=200, height=200), '"column": "pixels"'),
    "split": (_row(8, split="train"), '"column": "split"'),
    "mode": (_row(9, mode="RGBZ"), '"column": "mode"'),
    "format": (_row(10, format="EPS"), '"column": "format"'),
    "caption": (_row(11, split="captioned"), '"column": "caption"'),
}


def test_each_broken_rule_fails_and_is_named(tmp_path: Path) -> None:
    rows = [_row(1)] + [row for row, _ in BROKEN.values()]
    result = validate_outputs(PARAMS, tmp_path, _write(tmp_path, rows), FILES)
    assert result["success"] is False
    failed = _failed(result)
    missing = [rule for rule, (_, needle) in BROKEN.items() if needle not in failed]
    assert not missing, failed
    # Each failure names the offending values, so the user can find the rows.
    assert "XYZ" in failed and "EPS" in failed


def test_counts_that_do_not_add_up_fail(tmp_path: Path) -> None:
    report = _write(tmp_path, [_row(1)], quarantine=2)
    result = validate_outputs(PARAMS, tmp_path, {**report, "inputs": report["inputs"] + 1}, FILES)
    assert not result["success"] and '"column_B": "accounted"' in _failed(result)
    result = validate_outputs(PARAMS, tmp_path, {**report, "quarantined": 1, "inputs": 2}, FILES)
    assert not result["success"] and "quarantined_rows" in _failed(result)
    result = validate_outputs(PARAMS, tmp_path, {**report, "curated": 2, "inputs": 4}, FILES)
    assert not result["success"] and "expect_table_row_count_to_equal" in _failed(result)


def test_an_empty_manifest_is_valid_when_everything_was_set_aside(tmp_path: Path) -> None:
    result = validate_outputs(PARAMS, tmp_path, _write(tmp_path, [], quarantine=3), FILES)
    assert result["success"] is True, _failed(result)
