"""Run the RecA experiment arms from one SFT checkpoint over seeds, and tabulate their GenEval scores.

Arms, each a `reca train` from the same ``--model-dir`` with the same number
of steps and the rest of params.yaml's ``train`` section unchanged; (c) is the
control that isolates the effect of h_v (a RecA gain over it is a gain from
h_v, not from seeing unbiased images):

* ``a_more_sft``      more SFT on the captioned split: λ_reca 0, λ_i2t 1, λ_t2i 1
* ``b_reca_sft``      RecA mixed with the SFT losses: λ_reca 1, λ_i2t 1, λ_t2i 1
* ``c_template_only`` as b, with h_v removed from the condition (``condition: template_only``):
                      the same unlabeled images and compute, no understanding embeddings
* ``d_reca_no_t2i``   RecA with λ_t2i 0 (the paper's recipe): λ_reca 1, λ_i2t 1

For every (arm, seed) the script writes ``<out>/<arm>/seed<k>/params.yaml``
(params.yaml with that arm's ``train`` overrides, ``train.seed = k`` and no
model registration), runs ``reca train`` and ``reca evaluate`` on the trained
model as subprocesses (a fresh process per run, as DVC would), and keeps the
metrics. The SFT model is evaluated once, as arm ``sft`` (evaluation noise is
fixed by ``evaluate.seed``, so it does not depend on the training seed).
Finished runs are skipped when rerun (delete their folder to redo one), so a
folder can reuse another's runs of an arm through a symlink, e.g. the (a) runs,
which no ``--lambda-reca`` changes: ``ln -s ../arms/a_more_sft runs/arms_l025/``.

Classifier-free guidance (published GenEval numbers are sampled with it): the
arms are trained once and can be scored at other guidance scales.

* ``--guidance-scale G`` scores every run at G, in ``<run>/guidance<G>/``, with
  the tables in ``<out>/guidance<G>/``.
* ``--select-guidance G1 G2 ...`` first picks the scale on the control, not on
  the arm under test: arm ``--select-on`` (default ``a_more_sft``) is scored at
  each scale on validation draws (``evaluate.prompt_seed`` and
  ``evaluate.seed`` both + 1, in ``<run>/select/guidance<G>/``), the scale with
  the best mean ``overall`` over seeds wins (the smaller on a tie), and every
  arm is then scored at it as with ``--guidance-scale``. The sweep goes to
  ``<out>/guidance_selection.md`` and ``.json``.

Outputs in ``<out>``: ``arms.csv`` (arm, seed, metric, value: one row per
metric of every run), ``arms.md`` (mean ± std over seeds per arm and task) and
``arms.json`` (both). Every run is an MLflow child of one ``arms`` parent run.

Result tables for the documentation (``docs/results/``) are written here too,
never pasted by hand:

* ``--results-dir DIR`` (with ``--results-name NAME``, default the ``--out``
  folder's name plus ``_guidance<G>`` under guidance) also writes
  ``DIR/NAME_seeds.csv`` (the per-seed record, ``arms.csv``'s format),
  ``DIR/NAME.csv`` (arm, metric, mean, std, n) and ``DIR/NAME.md`` (mean ± std
  over seeds per task, then every run). With ``--lambda-reca`` the arms with a
  RecA term are labelled ``<arm> (λ <value>)`` there, so runs at several
  weights can share one table.
* ``--summarise CSV [CSV ...]`` trains nothing: it reads per-seed records
  (``NAME_seeds.csv`` or a run folder's ``arms.csv``; several are merged) and
  writes ``NAME.csv`` and ``NAME.md`` again, in ``--results-dir`` (default:
  the first CSV's folder).
* ``--embed FILE ...`` rewrites, in those markdown files, every block between
  ``<!-- results NAME summary[: METRIC ...] -->`` (or ``runs``) and
  ``<!-- /results -->`` with that table of ``DIR/NAME_seeds.csv``.

Example (the lead's full run; minutes per arm on 2 CPU cores)::

    python scripts/run_arms.py --seeds 0 1 2 --out runs/arms

and the documentation's tables again from their records::

    python scripts/run_arms.py --summarise docs/results/arms_500_seeds.csv --embed README.md docs/research-log.md

Run ``python scripts/run_arms.py --help`` for every option.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ARMS: dict[str, dict[str, Any]] = {
    "a_more_sft": {"lambda_reca": 0.0, "lambda_i2t": 1.0, "lambda_t2i": 1.0, "condition": "understanding"},
    "b_reca_sft": {"lambda_reca": 1.0, "lambda_i2t": 1.0, "lambda_t2i": 1.0, "condition": "understanding"},
    "c_template_only": {"lambda_reca": 1.0, "lambda_i2t": 1.0, "lambda_t2i": 1.0, "condition": "template_only"},
    "d_reca_no_t2i": {"lambda_reca": 1.0, "lambda_i2t": 1.0, "lambda_t2i": 0.0, "condition": "understanding"},
}
BASELINE = "sft"
#: metrics shown in the markdown summary, in order
SUMMARY_METRICS = ("overall", "single_object", "two_object", "counting", "colors", "position", "color_attr",
                   "colors_usual", "colors_unusual", "color_attr_unusual", "recon_psnr", "recon_ssim",
                   "recon_hv_cosine")
#: metrics in [0, 1] that are not accuracies: shown as they are, with two decimals
UNIT_METRICS = ("recon_ssim", "recon_hv_cosine")
#: ``<!-- results NAME summary|runs[: METRIC ...] -->`` ... ``<!-- /results -->`` in a markdown file
RESULTS_BLOCK = re.compile(r"(?P<open><!-- results (?P<name>[\w.\-]+) (?P<kind>summary|runs)"
                           r"(?:: (?P<metrics>[\w ]+?))? -->\n)(?P<body>.*?)(?P<close><!-- /results -->)", re.S)

Results = Mapping[tuple[str, "int | None"], Mapping[str, Any]]


def plain_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of plain YAML data."""
    return json.loads(json.dumps(dict(data)))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (0 for a single seed, NaN mean for none)."""
    mean = statistics.fmean(values) if values else float("nan")
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def arm_params(base: Mapping[str, Any], arm: str, seed: int, steps: int | None = None,
               lambda_reca: float | None = None) -> dict[str, Any]:
    """params.yaml contents for one (arm, seed): the arm's ``train`` overrides on top of ``base``.

    ``lambda_reca`` replaces the RecA weight of the arms that have a RecA term
    (every arm but ``a_more_sft``, whose weight stays 0).

    Raises:
        KeyError: For an unknown arm.
        reca.params.ParamsError: If the resulting ``train`` section is invalid.
    """
    from reca.params import parse_section

    params = plain_copy(base)
    train = {**params.get("train", {}), **ARMS[arm], "seed": seed, "registered_model": None}
    if steps is not None:
        train["steps"] = steps
    if lambda_reca is not None and ARMS[arm]["lambda_reca"] > 0:
        train["lambda_reca"] = lambda_reca
    params["train"] = train
    parse_section("train", train)  # fail before anything runs
    return params


def with_evaluate(params: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """A copy of ``params`` with ``evaluate`` keys replaced (e.g. ``guidance_scale``).

    Raises:
        reca.params.ParamsError: If the resulting ``evaluate`` section is invalid.
    """
    from reca.params import parse_section

    params = plain_copy(params)
    params["evaluate"] = {**params.get("evaluate", {}), **overrides}
    parse_section("evaluate", params["evaluate"])
    return params


def validation_draws(params: Mapping[str, Any]) -> dict[str, int]:
    """``evaluate`` overrides for draws the reported scores never see: prompt and sampling seeds + 1."""
    from reca.params import parse_section

    section = parse_section("evaluate", params.get("evaluate", {}))
    return {"prompt_seed": section.prompt_seed + 1, "seed": section.seed + 1}


def guidance_dir(scale: float) -> str:
    return f"guidance{scale:g}"


def scored_at(params: Mapping[str, Any], run_dir: Path, scale: float | None) -> tuple[dict[str, Any], Path]:
    """The params and folder of an evaluation at guidance ``scale``: ``run_dir`` itself when ``scale`` is None."""
    if scale is None:
        return dict(params), run_dir
    return with_evaluate(params, guidance_scale=scale), run_dir / guidance_dir(scale)


def _reca(args: Sequence[str], workdir: Path, env: Mapping[str, str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as fh:
        done = subprocess.run([sys.executable, "-m", "reca.cli", *args], cwd=workdir, env=dict(env), stdout=fh,
                              stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`reca {args[0]}` failed (exit {done.returncode}); see {log}")


def evaluate_model(name: str, model_dir: Path, params: Mapping[str, Any], eval_dir: Path,
                   opts: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """``reca evaluate`` one model with ``params`` into ``eval_dir``; return its metrics.

    The metrics are cached in ``eval_dir/metrics.json``: an evaluation that finished is not redone.
    """
    eval_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = eval_dir / "metrics.json"
    if not metrics_path.exists():
        params_file = eval_dir / "params.yaml"
        params_file.write_text(yaml.safe_dump(dict(params), sort_keys=False), encoding="utf-8")
        _reca(["evaluate", "--params", str(params_file), "--degraded", str(opts.degraded),
               "--model", f"{name}={model_dir}", "--metrics", str(metrics_path),
               "--plot-data", str(eval_dir / "per_task.json"), "--chart", str(eval_dir / "per_task.png"),
               "--report-dir", str(eval_dir / "report")], opts.workdir, env, eval_dir / "evaluate.log")
    return json.loads(metrics_path.read_text(encoding="utf-8"))[name]


def train_arm(arm: str, seed: int, base: Mapping[str, Any], opts: argparse.Namespace,
              env: Mapping[str, str]) -> tuple[Path, dict[str, Any]]:
    """Train one (arm, seed) unless its model exists; return the run folder and its params."""
    run_dir = opts.out / arm / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    params = arm_params(base, arm, seed, opts.steps, opts.lambda_reca)
    params_file = run_dir / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    if not (run_dir / "model" / "model.safetensors").exists():
        _reca(["train", "--params", str(params_file), "--degraded", str(opts.degraded),
               "--model-dir", str(opts.model_dir), "--embeddings", str(opts.embeddings),
               "--output", str(run_dir / "model")], opts.workdir, env, run_dir / "train.log")
    return run_dir, params


def run_arm(arm: str, seed: int, base: Mapping[str, Any], opts: argparse.Namespace, env: Mapping[str, str],
            guidance_scale: float | None = None) -> dict[str, Any]:
    """Train and evaluate one (arm, seed), at ``guidance_scale`` if given; return the model's metrics."""
    run_dir, params = train_arm(arm, seed, base, opts, env)
    return evaluate_model(arm, run_dir / "model", *scored_at(params, run_dir, guidance_scale), opts, env)


def best_scale(overall: Mapping[float, Sequence[float]]) -> float:
    """The scale with the highest mean ``overall`` over seeds; the smaller scale on a tie."""
    return max(sorted(overall), key=lambda g: (round(mean_std(overall[g])[0], 9), -g))


def select_guidance(base: Mapping[str, Any], opts: argparse.Namespace, env: Mapping[str, str]) -> float:
    """Score arm ``opts.select_on`` at every scale of ``opts.select_guidance`` on validation draws; the best scale.

    Writes the sweep to ``<out>/guidance_selection.md`` and ``.json``.
    """
    draws = validation_draws(base)
    overall: dict[float, list[float]] = {}
    for scale in opts.select_guidance:
        for seed in opts.seeds:
            print(f"guidance selection: {opts.select_on}, seed {seed}, scale {scale:g}", file=sys.stderr, flush=True)
            run_dir, params = train_arm(opts.select_on, seed, base, opts, env)
            metrics = evaluate_model(opts.select_on, run_dir / "model",
                                     with_evaluate(params, guidance_scale=scale, **draws),
                                     run_dir / "select" / guidance_dir(scale), opts, env)
            overall.setdefault(scale, []).append(float(metrics["overall"]))
    best = best_scale(overall)
    lines = [f"Guidance selected on {opts.select_on} (seeds {' '.join(map(str, opts.seeds))}), validation draws "
             f"{draws}: {best:g}", "", "| guidance | overall (mean ± std) | per seed |", "|---|---|---|"]
    for scale, values in overall.items():
        mean, std = mean_std(values)
        lines.append(f"| {scale:g} | {100 * mean:.1f} ± {100 * std:.1f} | "
                     + " / ".join(f"{100 * v:.1f}" for v in values) + " |")
    (opts.out / "guidance_selection.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (opts.out / "guidance_selection.json").write_text(json.dumps(
        {"select_on": opts.select_on, "seeds": opts.seeds, "validation": draws, "best": best,
         "overall": {f"{g:g}": v for g, v in overall.items()}}, indent=2), encoding="utf-8")
    return best


def long_rows(results: Mapping[tuple[str, int | None], Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (arm, seed, metric); the baseline's seed is empty."""
    return [{"arm": arm, "seed": "" if seed is None else seed, "metric": key, "value": float(value)}
            for (arm, seed), metrics in results.items() for key, value in metrics.items()
            if isinstance(value, (int, float)) and not key.endswith("_images")]


def _shown(metric: str) -> tuple[float, str]:
    """How a metric is printed: accuracies in percent with one decimal, PSNR in dB, SSIM and cosines as is."""
    if metric in UNIT_METRICS:
        return 1.0, ".2f"
    return (1.0, ".1f") if metric.startswith("recon_") else (100.0, ".1f")


def _metrics(results: Results, metrics: Sequence[str] | None) -> list[str]:
    return list(metrics) if metrics else [m for m in SUMMARY_METRICS if any(m in v for v in results.values())]


def summary_table(results: Results, metrics: Sequence[str] | None = None) -> tuple[list[dict], str]:
    """Mean ± std over seeds per arm and metric, as rows and as a markdown table (percent for accuracies).

    Args:
        results: Metrics per (arm, seed); the baseline's seed is None.
        metrics: Columns to show (default: every metric of ``SUMMARY_METRICS`` that some run has).
    """
    arms = list(dict.fromkeys(arm for arm, _ in results))
    metrics = _metrics(results, metrics)
    rows, lines = [], ["| arm | seeds | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for arm in arms:
        runs = [v for (a, _), v in results.items() if a == arm]
        cells = []
        for metric in metrics:
            values = [float(v[metric]) for v in runs if metric in v]
            if not values:  # e.g. the SFT baseline has no arm-only metric
                cells.append("–")
                continue
            mean, std = mean_std(values)
            rows.append({"arm": arm, "metric": metric, "mean": mean, "std": std, "n": len(values)})
            scale, fmt = _shown(metric)
            cells.append(f"{scale * mean:{fmt}} ± {scale * std:{fmt}}")
        lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")
    return rows, "\n".join(lines) + "\n"


def per_run_table(results: Results, metrics: Sequence[str] | None = None) -> str:
    """Every run's scores, one row per (arm, seed), as a markdown table (percent for accuracies)."""
    metrics = _metrics(results, metrics)
    lines = ["| arm | seed | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for (arm, seed), values in results.items():
        cells = [("–" if m not in values else
                  f"{float(values[m]):.2f}" if m.startswith("recon_") else f"{100 * float(values[m]):.1f}")
                 for m in metrics]
        lines.append(f"| {arm} | {'–' if seed is None else seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(out: Path, results: Mapping[tuple[str, int | None], Mapping[str, Any]]) -> dict[str, Any]:
    """Write ``arms.csv``, ``arms.md`` (means ± std, then every run) and ``arms.json``; return the JSON content."""
    rows = long_rows(results)
    with open(out / "arms.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["arm", "seed", "metric", "value"])
        writer.writeheader()
        writer.writerows(rows)
    summary, markdown = summary_table(results)
    markdown += "\nEvery run:\n\n" + per_run_table(results)
    (out / "arms.md").write_text(markdown, encoding="utf-8")
    content = {"runs": rows, "summary": summary}
    (out / "arms.json").write_text(json.dumps(content, indent=2), encoding="utf-8")
    return content


def arm_label(arm: str, lambda_reca: float | None) -> str:
    """An arm's name in a results record: ``<arm> (λ <w>)`` when ``--lambda-reca`` set the weight of its RecA term."""
    if lambda_reca is None or arm not in ARMS or ARMS[arm]["lambda_reca"] == 0:
        return arm
    return f"{arm} (λ {lambda_reca:g})"


def read_runs(paths: Sequence[Path]) -> dict[tuple[str, int | None], dict[str, float]]:
    """Metrics per (arm, seed) from per-seed records (``arms.csv`` rows: arm, seed, metric, value), merged in order.

    A run may appear in several records (e.g. the (a) runs every ``--lambda-reca`` folder shares) only with the
    same values.

    Raises:
        ValueError: On a record without those columns, or two different values of one (arm, seed, metric).
    """
    results: dict[tuple[str, int | None], dict[str, float]] = {}
    for path in paths:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames != ["arm", "seed", "metric", "value"]:
                raise ValueError(f"{path}: expected the columns arm,seed,metric,value, got {reader.fieldnames}")
            for line, row in enumerate(reader, start=2):
                key = (row["arm"], int(row["seed"]) if row["seed"] else None)
                value, known = float(row["value"]), results.setdefault(key, {}).get(row["metric"])
                if known is not None and known != value:
                    raise ValueError(f"{path}:{line}: {row['arm']} seed {row['seed'] or '–'} {row['metric']} is "
                                     f"{value} here and {known} in an earlier record")
                results[key][row["metric"]] = value
    return results


def results_markdown(name: str, results: Results) -> str:
    """The page ``NAME.md`` of a results folder: what it is, mean ± std over seeds, then every run."""
    _, summary = summary_table(results)
    return (f"# Results `{name}`: GenEval scores of the arms over seeds\n\n"
            f"Written by `scripts/run_arms.py` from the per-seed record `{name}_seeds.csv` beside it (one row per "
            f"arm, seed and metric), never by hand: `python scripts/run_arms.py --summarise` on that record writes "
            f"this page and `{name}.csv` again. Which runs these are: [the index](README.md); back to "
            f"[the research log](../research-log.md).\n\n"
            "Mean ± sample standard deviation over seeds (`seeds`: runs; accuracies in % of images, PSNR in dB):"
            f"\n\n{summary}\nEvery run:\n\n{per_run_table(results)}")


def write_results(results_dir: Path, name: str, results: Results) -> dict[str, Path]:
    """Write ``NAME_seeds.csv`` (the per-seed record), ``NAME.csv`` (arm, metric, mean, std, n) and ``NAME.md``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    paths = {"seeds": results_dir / f"{name}_seeds.csv", "summary": results_dir / f"{name}.csv",
             "markdown": results_dir / f"{name}.md"}
    with open(paths["seeds"], "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["arm", "seed", "metric", "value"])
        writer.writeheader()
        writer.writerows(long_rows(results))
    with open(paths["summary"], "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["arm", "metric", "mean", "std", "n"])
        writer.writeheader()
        writer.writerows(summary_table(results)[0])
    paths["markdown"].write_text(results_markdown(name, results), encoding="utf-8")
    return paths


def embed_tables(markdown: str, results_dir: Path) -> str:
    """``markdown`` with every results block rewritten from ``results_dir/NAME_seeds.csv``.

    A block is ``<!-- results NAME summary -->`` (mean ± std) or ``<!-- results NAME runs -->`` (every run),
    optionally with ``: METRIC ...`` naming the columns, up to ``<!-- /results -->``.

    Raises:
        FileNotFoundError: If a block names a record that ``results_dir`` does not hold.
    """
    def table(match: re.Match) -> str:
        results = read_runs([results_dir / f"{match['name']}_seeds.csv"])
        metrics = match["metrics"].split() if match["metrics"] else None
        body = summary_table(results, metrics)[1] if match["kind"] == "summary" else per_run_table(results, metrics)
        return match["open"] + "\n" + body + "\n" + match["close"]  # blank lines: the table ends before the close

    return RESULTS_BLOCK.sub(table, markdown)


def embed_in(files: Sequence[Path], results_dir: Path) -> list[Path]:
    """Rewrite the results blocks of ``files`` in place; return the files that changed."""
    changed = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        new = embed_tables(text, results_dir)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def summarise(opts: argparse.Namespace) -> int:
    """``--summarise``: write a results folder's tables again from per-seed records; train nothing."""
    name = opts.results_name
    if name is None:
        if len(opts.summarise) > 1 or not opts.summarise[0].stem.endswith("_seeds"):
            build_parser().error("--summarise needs --results-name unless it reads one NAME_seeds.csv")
        name = opts.summarise[0].stem.removesuffix("_seeds")
    results_dir = opts.results_dir or opts.summarise[0].parent
    paths = write_results(results_dir, name, read_runs(opts.summarise))
    changed = embed_in(opts.embed or [], results_dir)
    print(json.dumps({"written": [str(p) for p in paths.values()], "embedded": [str(p) for p in changed]}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Arms: " + "; ".join(f"{k}: {v}" for k, v in ARMS.items()))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="base params file")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS), help="arms to run (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="train.steps for every arm (default: params.yaml's)")
    parser.add_argument("--lambda-reca", type=float, default=None,
                        help="λ_reca of the arms with a RecA term, b, c and d (default: 1; a keeps 0)")
    parser.add_argument("--out", type=Path, default=Path("runs/arms"), help="output folder (default: runs/arms)")
    parser.add_argument("--degraded", type=Path, default=Path("data/degraded"))
    parser.add_argument("--model-dir", type=Path, default=Path("models/sft"), help="the SFT checkpoint every arm starts from")
    parser.add_argument("--embeddings", type=Path, default=Path("data/embeddings"),
                        help="the `embed` cache of --model-dir (default: data/embeddings)")
    parser.add_argument("--workdir", type=Path, default=Path("."),
                        help="where runs execute, like the repository root: it must hold configs/ (DeepSpeed); "
                        "checkpoints/ and the local MLflow store go here (default: .)")
    parser.add_argument("--no-baseline", action="store_true", help="do not evaluate the SFT model itself")
    guidance = parser.add_mutually_exclusive_group()
    guidance.add_argument("--guidance-scale", type=float, default=None,
                          help="score every run at this classifier-free guidance scale (default: params.yaml's, "
                          "in the run folders themselves)")
    guidance.add_argument("--select-guidance", type=float, nargs="+", default=None, metavar="SCALE",
                          help="pick the guidance scale among these on --select-on's validation draws, then score "
                          "every run at it")
    parser.add_argument("--select-on", choices=sorted(ARMS), default="a_more_sft",
                        help="the arm whose scores pick the guidance scale (default: a_more_sft, the control)")
    results = parser.add_argument_group("result tables for the documentation (docs/results)")
    results.add_argument("--results-dir", type=Path, default=None,
                         help="also write NAME_seeds.csv, NAME.csv and NAME.md here, e.g. docs/results (default: "
                         "none; with --summarise, the first record's folder)")
    results.add_argument("--results-name", default=None,
                         help="NAME of those files (default: the --out folder's name, plus _guidance<G> under "
                         "guidance; with --summarise, the record's name without _seeds)")
    results.add_argument("--summarise", type=Path, nargs="+", default=None, metavar="CSV",
                         help="train nothing: write NAME.csv and NAME.md from these per-seed records "
                         "(NAME_seeds.csv or a run folder's arms.csv; several are merged)")
    results.add_argument("--embed", type=Path, nargs="+", default=None, metavar="MD",
                         help="then rewrite the <!-- results NAME ... --> blocks of these markdown files from "
                         "the records in the results folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    if opts.summarise:
        return summarise(opts)
    for name in ("params", "degraded", "model_dir", "out", "embeddings", "workdir"):
        setattr(opts, name, getattr(opts, name).resolve())
    base = yaml.safe_load(opts.params.read_text(encoding="utf-8"))
    for arm in opts.arms:  # every arm's train section is checked before anything runs
        arm_params(base, arm, opts.seeds[0], opts.steps, opts.lambda_reca)
    for scale in opts.select_guidance or ([] if opts.guidance_scale is None else [opts.guidance_scale]):
        with_evaluate(base, guidance_scale=scale)  # an invalid scale fails before anything runs
    opts.out.mkdir(parents=True, exist_ok=True)
    from reca.tracking.mlflow_run import PARENT_ENV, pipeline_run

    results: dict[tuple[str, int | None], dict[str, Any]] = {}
    with pipeline_run("arms", root=opts.workdir) as parent:
        env = {**os.environ, PARENT_ENV: parent}
        scale = select_guidance(base, opts, env) if opts.select_guidance else opts.guidance_scale
        tables = opts.out if scale is None else opts.out / guidance_dir(scale)
        tables.mkdir(parents=True, exist_ok=True)
        if not opts.no_baseline:
            results[(BASELINE, None)] = evaluate_model(BASELINE, opts.model_dir,
                                                       *scored_at(base, opts.out / BASELINE, scale), opts, env)
        for seed in opts.seeds:
            for arm in opts.arms:
                print(f"arm {arm}, seed {seed}", file=sys.stderr, flush=True)
                results[(arm, seed)] = run_arm(arm, seed, base, opts, env, scale)
                write_tables(tables, results)  # a partial table survives an interruption
    write_tables(tables, results)
    print((tables / "arms.md").read_text(encoding="utf-8"))
    if opts.results_dir is not None:
        name = opts.results_name or opts.out.name + ("" if scale is None else f"_{guidance_dir(scale)}")
        labelled = {(arm_label(arm, opts.lambda_reca), seed): v for (arm, seed), v in results.items()}
        write_results(opts.results_dir, name, labelled)
        embed_in(opts.embed or [], opts.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
