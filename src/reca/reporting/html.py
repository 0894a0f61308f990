"""Render a report as one self-contained HTML file: inline CSS, every chart and grid a ``data:`` URI.

No script, stylesheet, font or image is fetched from anywhere, so the file
opens the same on a laptop offline, as an MLflow artifact, or attached to an
e-mail. The evaluation table is `evaluate`'s own comparison table
(:func:`reca.evaluation.comparison_report.markdown_table`) rendered as HTML.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
from collections.abc import Sequence

from reca.evaluation.comparison_report import markdown_table
from reca.reporting.charts import loss_curves, per_task_chart, series_scores
from reca.reporting.collect import EVALUATE_STAGE, RunSummary

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #1d2330; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d6dae3; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #d6dae3; padding: 0.25rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eef1f6; }
code { font-size: 0.8rem; }
figure { margin: 0.5rem 0 1.5rem; } figcaption { font-size: 0.8rem; color: #5a6275; }
img { max-width: 100%; image-rendering: pixelated; border: 1px solid #e3e6ee; }
.meta { color: #5a6275; font-size: 0.85rem; }
"""
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], css_class: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def markdown_table_html(markdown: str, css_class: str) -> str:
    """A pipe table (header, separator, rows) as an HTML table; ``**bold**`` becomes ``<strong>``."""
    lines = [line.strip().strip("|").split("|") for line in markdown.strip().splitlines()]
    header, rows = lines[0], lines[2:]
    html_table = _table([h.strip() for h in header], [[c.strip() for c in row] for row in rows], css_class)
    return _BOLD.sub(r"<strong>\1</strong>", html_table)


def _figure(png: bytes, alt: str, caption: str, css_class: str) -> str:
    return (f'<figure><img class="{css_class}" alt="{html.escape(alt)}" src="{data_uri(png)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _runs_section(runs: Sequence[RunSummary]) -> str:
    rows = []
    for run in runs:
        started = dt.datetime.fromtimestamp(run.start_time / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        commit = run.tags.get("git.commit", "")[:10] + (" (dirty)" if run.tags.get("git.dirty") == "true" else "")
        rows.append([run.label, run.run_id, run.status, started, commit, run.tags.get("dvc.exp_name", ""),
                     ", ".join(run.stages)])
    table = _table(["run", "MLflow run id", "status", "started", "git commit", "DVC experiment", "stages"], rows,
                   "runs")
    return f'<h2 id="runs">Runs</h2>{table}'


def _evaluation_section(runs: Sequence[RunSummary]) -> str:
    scores = series_scores(runs)
    if not scores:
        return '<h2 id="evaluation">Evaluation</h2><p>No evaluate stage in these runs.</p>'
    out = ['<h2 id="evaluation">Evaluation</h2>',
           markdown_table_html(markdown_table(scores, list(scores)), "evaluation")]
    chart = per_task_chart(runs)
    if chart is not None:
        out.append(_figure(chart, "per-task accuracy bar chart", "% correct images per GenEval task", "chart"))
    return "".join(out)


def _stage_metrics_section(runs: Sequence[RunSummary]) -> str:
    keys = sorted({(stage.stage, key) for run in runs for stage in run.stages.values()
                   if stage.stage != EVALUATE_STAGE for key in stage.metrics})
    if not keys:
        return ""
    rows = []
    for stage, key in keys:
        cells = []
        for run in runs:
            value = run.stages[stage].metrics.get(key) if stage in run.stages else None
            cells.append("–" if value is None else f"{value:.4g}")
        rows.append([f"{stage}.{key}", *cells])
    return ('<h2 id="stage-metrics">Stage metrics (final values)</h2>'
            + _table(["metric", *[r.label for r in runs]], rows, "stage-metrics"))


def _loss_section(runs: Sequence[RunSummary]) -> str:
    stages = sorted({s for run in runs for s, st in run.stages.items() if st.curves})
    figures = []
    for stage in stages:
        png = loss_curves(runs, stage)
        if png is not None:
            figures.append(_figure(png, f"{stage} loss curves", f"{stage}: loss per logged step", "chart"))
    return '<h2 id="losses">Loss curves</h2>' + "".join(figures) if figures else ""


def _params_section(runs: Sequence[RunSummary]) -> str:
    params = [run.params() for run in runs]
    keys = sorted({k for p in params for k in p})
    if len(runs) > 1:
        differing = [k for k in keys if len({p.get(k) for p in params}) > 1]
        if not differing:
            return '<h2 id="params">Params that differ</h2><p>None: every run used the same params.</p>'
        rows = [[k, *[p.get(k, "–") for p in params]] for k in differing]
        return ('<h2 id="params">Params that differ</h2>'
                + _table(["param", *[r.label for r in runs]], rows, "params"))
    rows = [[k, params[0][k]] for k in keys]
    return ('<h2 id="params">Params</h2><details><summary>All params of this run</summary>'
            + _table(["param", "value"], rows, "params") + "</details>")


def _samples_section(runs: Sequence[RunSummary]) -> str:
    figures = []
    for run in runs:
        stage = run.stages.get(EVALUATE_STAGE)
        for name, png in sorted((stage.images if stage else {}).items()):
            figures.append(_figure(png, f"{run.label}: {name}", f"{run.label}: {name}", "grid"))
    return '<h2 id="samples">Sample grids</h2>' + "".join(figures) if figures else ""


def render(runs: Sequence[RunSummary], title: str) -> str:
    """The whole report as an HTML document."""
    generated = dt.datetime.now(tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [_runs_section(runs), _evaluation_section(runs), _stage_metrics_section(runs), _loss_section(runs),
                _params_section(runs), _samples_section(runs)]
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="meta">Generated {generated} by <code>reca report</code> from MLflow; self-contained '
            "(charts and images embedded).</p>" + "".join(sections) + "</body></html>\n")
