"""reca.evaluation.results_files: finding and reading the per-image verdicts of `reca evaluate`."""

from __future__ import annotations

import json

import pytest

from reca.evaluation.results_files import read_results, results_file


def test_a_run_folder_needs_exactly_one_results_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected one"):
        results_file(tmp_path)
    (tmp_path / "report" / "m").mkdir(parents=True)
    (tmp_path / "report" / "m" / "results.jsonl").write_text("")
    assert results_file(tmp_path) == tmp_path / "report" / "m" / "results.jsonl"
    (tmp_path / "report" / "n").mkdir()
    (tmp_path / "report" / "n" / "results.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match="found 2"):
        results_file(tmp_path)


def test_rows_come_back_with_their_metadata_parsed(tmp_path):
    metadata = {"tag": "counting", "include": [{"class": "square", "count": 2}], "prompt": "a photo of two squares"}
    row = {"filename": "x.png", "tag": "counting", "correct": False, "metadata": json.dumps(metadata)}
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(row) + "\n\n")
    assert read_results(path) == [{**row, "metadata": metadata}]
    path.write_text(json.dumps(row) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"results.jsonl:2: not valid JSON"):
        read_results(path)
    path.write_text(json.dumps({**row, "metadata": "{oops"}) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl: row 1: metadata is not valid JSON"):
        read_results(path)
