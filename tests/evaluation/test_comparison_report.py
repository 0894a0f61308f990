"""Tests for the `evaluate` comparison report (markdown table, bar chart, DVC plot rows)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from reca.evaluation.comparison_report import bar_chart, markdown_table, plot_rows

METRICS = {
    "sft": {"overall": 0.25, "colors": 0.5, "colors_prompts": 0.75, "counting": 0.0, "counting_prompts": 0.0,
            "colors_unusual": 0.1, "recon_psnr": 20.0},
    "reca": {"overall": 0.375, "colors": 0.75, "colors_prompts": 1.0, "counting": 0.0, "counting_prompts": 0.0,
             "colors_unusual": 0.4, "recon_psnr": 21.5},
}


def test_markdown_table_has_tasks_in_geneval_order_with_images_prompts_and_delta() -> None:
    table = markdown_table(METRICS, ["sft", "reca"])
    lines = table.splitlines()
    assert lines[0] == "| metric | sft | reca | Δ |"
    assert "| **overall** (mean of tasks, %) | 25.0 | 37.5 | +12.5 |" in lines
    counting, colors = (next(i for i, line in enumerate(lines) if line.startswith(f"| {t} ")) for t in
                        ("counting", "colors"))
    assert counting < colors
    assert lines[colors] == "| colors (% images / % prompts) | 50.0 / 75.0 | 75.0 / 100.0 | +25.0 / +25.0 |"
    assert "| colors, unusual colour (%) | 10.0 | 40.0 | +30.0 |" in lines
    assert "| reconstruction PSNR (dB) | 20.000 | 21.500 | +1.5 |" in lines
    assert not any("position" in line for line in lines)
    assert "Δ" not in markdown_table(METRICS, ["sft"])


def test_plot_rows_give_one_bar_per_task_and_model() -> None:
    rows = plot_rows(METRICS, ["sft", "reca"])
    assert [r["bar"] for r in rows] == ["counting · sft", "counting · reca", "colors · sft", "colors · reca",
                                        "overall · sft", "overall · reca"]
    assert rows[3]["accuracy"] == 75.0 and rows[3]["model"] == "reca"


def test_bar_chart_is_a_png(tmp_path: Path) -> None:
    path = bar_chart(tmp_path / "per_task.png", METRICS, ["sft", "reca"])
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300
