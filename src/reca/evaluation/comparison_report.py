"""The `evaluate` comparison report: markdown table, per-task bar chart, DVC plot rows.

Reads the per-model metrics that ``reca.stages.evaluate`` computes (GenEval
task accuracies from :func:`reca.evaluation.geneval.summarize`, plus
reconstruction fidelity) and renders them for people (markdown, PNG rendered
offline with matplotlib's Agg backend) and for ``dvc plots`` (a flat JSON
table).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reca.evaluation.geneval_prompts import TASKS
from reca.fileio import atomic_path

#: extra rows of the markdown table (metric key, label), when present
EXTRA_ROWS: tuple[tuple[str, str], ...] = (
    ("colors_usual", "colors, usual colour"),
    ("colors_unusual", "colors, unusual colour"),
    ("color_attr_usual", "color_attr, usual colours"),
    ("color_attr_unusual", "color_attr, some unusual colour"),
    ("images_correct", "all images"),
    ("prompts_correct", "all prompts"),
    ("recon_psnr", "reconstruction PSNR (dB)"),
    ("recon_ssim", "reconstruction SSIM"),
    ("recon_hv_cosine", "reconstruction h_v cosine"),
)
_NOT_PERCENT = {"recon_psnr", "recon_ssim", "recon_hv_cosine"}


def _cell(metrics: Mapping[str, Any], key: str) -> str:
    if key not in metrics:
        return "–"
    value = float(metrics[key])
    return f"{value:.3f}" if key in _NOT_PERCENT else f"{100 * value:.1f}"


def tasks_in(metrics: Mapping[str, Mapping[str, Any]], models: Sequence[str]) -> list[str]:
    """GenEval tasks scored for any of ``models``, in GenEval's order."""
    return [t for t in TASKS if any(t in metrics[m] for m in models)]


def markdown_table(metrics: Mapping[str, Mapping[str, Any]], models: Sequence[str],
                   intervals: Mapping[str, Sequence[float]] | None = None) -> str:
    """Rows: overall, each task (% correct images / % correct prompts), diagnostics; columns: models (+ delta).

    The delta column (last model minus first) appears when there are exactly
    two models; with ``intervals`` (metric -> 95% interval of the difference,
    :func:`reca.evaluation.bootstrap.difference_intervals`), so does a column
    giving each image-accuracy difference's interval.
    """
    delta = len(models) == 2
    with_ci = delta and intervals is not None
    header = ["metric", *models] + (["Δ"] if delta else []) + (["95% interval of Δ"] if with_ci else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(label: str, keys: Sequence[str]) -> None:
        cells = [" / ".join(_cell(metrics[m], k) for k in keys) for m in models]
        if delta:
            a, b = (metrics[m] for m in models)
            diffs = []
            for k in keys:
                if k in a and k in b:
                    scale = 1.0 if k in _NOT_PERCENT else 100.0
                    diffs.append(f"{scale * (float(b[k]) - float(a[k])):+.1f}")
                else:
                    diffs.append("–")
            cells.append(" / ".join(diffs))
        if with_ci:
            ci = intervals.get(keys[0])
            cells.append(f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("**overall** (mean of tasks, %)", ["overall"])
    for task in tasks_in(metrics, models):
        row(f"{task} (% images / % prompts)", [task, f"{task}_prompts"])
    for key, label in EXTRA_ROWS:
        if any(key in metrics[m] for m in models):
            row(label if key in _NOT_PERCENT else f"{label} (%)", [key])
    return "\n".join(lines) + "\n"


def plot_rows(metrics: Mapping[str, Mapping[str, Any]], models: Sequence[str]) -> list[dict[str, Any]]:
    """The data of the DVC bar-chart plot: one row per (task, model) with its % correct images.

    DVC's bar templates take one value field, so each bar gets its own label
    (``bar``: "task · model"); ``dvc plots diff`` then sets revisions side by side.
    """
    return [{"bar": f"{task} · {m}", "task": task, "model": m,
             "accuracy": round(100 * float(metrics[m].get(task, 0.0)), 2)}
            for task in [*tasks_in(metrics, models), "overall"] for m in models]


def bar_chart(path: str | Path, metrics: Mapping[str, Mapping[str, Any]], models: Sequence[str]) -> Path:
    """Grouped bars of % correct images per task (and overall), one colour per model; PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [*tasks_in(metrics, models), "overall"]
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(1.3 * len(tasks) + 2, 3.6), dpi=100)
    for k, model in enumerate(models):
        xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(tasks))]
        bars = ax.bar(xs, [100 * float(metrics[model].get(t, 0.0)) for t in tasks], width, label=model)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right")
    ax.set_ylabel("% correct images")
    ax.set_ylim(0, 105)
    ax.set_title("GenEval tasks")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
