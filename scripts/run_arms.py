"""Run the RecA experiment arms from one SFT checkpoint over seeds, and tabulate their GenEval scores.

Arms (SCIENCE.md: which control isolates the effect of h_v), each a `reca
train` from the same ``--model-dir`` with the same number of steps and the
rest of params.yaml's ``train`` section unchanged:

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
Finished runs are skipped when rerun (delete their folder to redo one).

Outputs in ``<out>``: ``arms.csv`` (arm, seed, metric, value: one row per
metric of every run), ``arms.md`` (mean ± std over seeds per arm and task) and
``arms.json`` (both). Every run is an MLflow child of one ``arms`` parent run.

Example (the lead's full run; minutes per arm on 2 CPU cores)::

    python scripts/run_arms.py --seeds 0 1 2 --out runs/arms

Run ``python scripts/run_arms.py --help`` for every option.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
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

    params = json.loads(json.dumps(dict(base)))  # a deep copy of plain YAML data
    train = {**params.get("train", {}), **ARMS[arm], "seed": seed, "registered_model": None}
    if steps is not None:
        train["steps"] = steps
    if lambda_reca is not None and ARMS[arm]["lambda_reca"] > 0:
        train["lambda_reca"] = lambda_reca
    params["train"] = train
    parse_section("train", train)  # fail before anything runs
    return params


def _reca(args: Sequence[str], workdir: Path, env: Mapping[str, str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as fh:
        done = subprocess.run([sys.executable, "-m", "reca.cli", *args], cwd=workdir, env=dict(env), stdout=fh,
                              stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`reca {args[0]}` failed (exit {done.returncode}); see {log}")


def evaluate_model(name: str, model_dir: Path, params_file: Path, run_dir: Path, opts: argparse.Namespace,
                   env: Mapping[str, str]) -> dict[str, Any]:
    """``reca evaluate`` one model into ``run_dir``; return its metrics (cached in ``run_dir/metrics.json``)."""
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        _reca(["evaluate", "--params", str(params_file), "--degraded", str(opts.degraded),
               "--model", f"{name}={model_dir}", "--metrics", str(metrics_path),
               "--plot-data", str(run_dir / "per_task.json"), "--chart", str(run_dir / "per_task.png"),
               "--report-dir", str(run_dir / "report")], opts.workdir, env, run_dir / "evaluate.log")
    return json.loads(metrics_path.read_text(encoding="utf-8"))[name]


def run_arm(arm: str, seed: int, base: Mapping[str, Any], opts: argparse.Namespace,
            env: Mapping[str, str]) -> dict[str, Any]:
    """Train and evaluate one (arm, seed); return the model's metrics."""
    run_dir = opts.out / arm / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    params_file = run_dir / "params.yaml"
    params_file.write_text(yaml.safe_dump(arm_params(base, arm, seed, opts.steps, opts.lambda_reca), sort_keys=False),
                           encoding="utf-8")
    model_dir = run_dir / "model"
    if not (model_dir / "model.safetensors").exists():
        _reca(["train", "--params", str(params_file), "--degraded", str(opts.degraded),
               "--model-dir", str(opts.model_dir), "--embeddings", str(opts.embeddings),
               "--output", str(model_dir)], opts.workdir, env, run_dir / "train.log")
    return evaluate_model(arm, model_dir, params_file, run_dir, opts, env)


def long_rows(results: Mapping[tuple[str, int | None], Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (arm, seed, metric); the baseline's seed is empty."""
    return [{"arm": arm, "seed": "" if seed is None else seed, "metric": key, "value": float(value)}
            for (arm, seed), metrics in results.items() for key, value in metrics.items()
            if isinstance(value, (int, float)) and not key.endswith("_images")]


def summary_table(results: Mapping[tuple[str, int | None], Mapping[str, Any]]) -> tuple[list[dict], str]:
    """Mean ± std over seeds per arm and metric, as rows and as a markdown table (percent for accuracies)."""
    arms = list(dict.fromkeys(arm for arm, _ in results))
    metrics = [m for m in SUMMARY_METRICS if any(m in v for v in results.values())]
    rows, lines = [], ["| arm | seeds | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for arm in arms:
        runs = [v for (a, _), v in results.items() if a == arm]
        cells = []
        for metric in metrics:
            values = [float(v[metric]) for v in runs if metric in v]
            mean = statistics.fmean(values) if values else float("nan")
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            rows.append({"arm": arm, "metric": metric, "mean": mean, "std": std, "n": len(values)})
            scale = 1.0 if metric.startswith("recon_") else 100.0
            cells.append(f"{scale * mean:.1f} ± {scale * std:.1f}" if values else "–")
        lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")
    return rows, "\n".join(lines) + "\n"


def per_run_table(results: Mapping[tuple[str, int | None], Mapping[str, Any]]) -> str:
    """Every run's scores, one row per (arm, seed), as a markdown table (percent for accuracies)."""
    metrics = [m for m in SUMMARY_METRICS if any(m in v for v in results.values())]
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    for name in ("params", "degraded", "model_dir", "out", "embeddings", "workdir"):
        setattr(opts, name, getattr(opts, name).resolve())
    base = yaml.safe_load(opts.params.read_text(encoding="utf-8"))
    for arm in opts.arms:  # every arm's train section is checked before anything runs
        arm_params(base, arm, opts.seeds[0], opts.steps, opts.lambda_reca)
    opts.out.mkdir(parents=True, exist_ok=True)
    from reca.tracking.mlflow_run import PARENT_ENV, pipeline_run

    results: dict[tuple[str, int | None], dict[str, Any]] = {}
    with pipeline_run("arms", root=opts.workdir) as parent:
        env = {**os.environ, PARENT_ENV: parent}
        if not opts.no_baseline:
            baseline_dir = opts.out / BASELINE
            baseline_dir.mkdir(parents=True, exist_ok=True)
            (baseline_dir / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False), encoding="utf-8")
            results[(BASELINE, None)] = evaluate_model(BASELINE, opts.model_dir, baseline_dir / "params.yaml",
                                                       baseline_dir, opts, env)
        for seed in opts.seeds:
            for arm in opts.arms:
                print(f"arm {arm}, seed {seed}", file=sys.stderr, flush=True)
                results[(arm, seed)] = run_arm(arm, seed, base, opts, env)
                write_tables(opts.out, results)  # a partial table survives an interruption
    write_tables(opts.out, results)
    print((opts.out / "arms.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
