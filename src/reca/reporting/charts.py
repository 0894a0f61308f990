"""Charts of a report as PNG bytes, drawn offline with matplotlib's Agg backend.

The per-task bars are `evaluate`'s own chart (:func:`reca.evaluation.comparison_report.bar_chart`)
with one series per (run, model) instead of per model, so a report and an
evaluate run draw the same picture of the same numbers.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from pathlib import Path

from reca.evaluation.comparison_report import bar_chart, tasks_in
from reca.reporting.collect import RunSummary


def series_scores(runs: Sequence[RunSummary]) -> dict[str, dict[str, float]]:
    """Evaluate scores per series: ``<model>`` for one run, ``<run label> · <model>`` for several."""
    series: dict[str, dict[str, float]] = {}
    for run in runs:
        for model, metrics in run.evaluation().items():
            series[model if len(runs) == 1 else f"{run.label} · {model}"] = metrics
    return series


def per_task_chart(runs: Sequence[RunSummary]) -> bytes | None:
    """Grouped bars of each GenEval task's accuracy per series; ``None`` when no run was evaluated."""
    scores = series_scores(runs)
    if not scores or not tasks_in(scores, list(scores)):
        return None
    with tempfile.TemporaryDirectory(prefix="reca-chart-") as tmp:
        path = bar_chart(Path(tmp) / "per_task.png", scores, list(scores))
        return path.read_bytes()


def loss_curves(runs: Sequence[RunSummary], stage: str) -> bytes | None:
    """Loss curves of ``stage`` (each ``loss*`` metric of each run) on one chart; ``None`` if there are none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [(run, key, points) for run in runs if stage in run.stages
             for key, points in run.stages[stage].curves.items() if points]
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=100)
    for run, key, points in lines:
        steps, values = zip(*sorted(points), strict=True)
        label = key if len(runs) == 1 else f"{run.label} · {key}"
        ax.plot(steps, values, marker="." if len(points) < 30 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{stage}: training losses")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
