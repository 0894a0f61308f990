"""``reca``: thin command-line entry points for the pipeline stages (what ``dvc.yaml`` calls).

Each subcommand parses paths, loads and validates its own section(s) of
``params.yaml``, opens an MLflow run and calls ``reca.stages.<stage>.run``.
No pipeline logic lives here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from reca.params import ParamsError, load_section, validate_file

# Quiet, local tools (see STACK notes): no telemetry, no analytics daemons.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _params(args: argparse.Namespace, section: str):  # noqa: ANN202 - returns the section's model
    return load_section(section, args.params)


def _cmd_curate(args: argparse.Namespace) -> dict:
    from reca.stages import curate
    from reca.tracking.mlflow_run import stage_run

    params = _params(args, "curate")
    with stage_run("curate", params_file=args.params) as run:
        from reca.params import flatten

        run.log_params(flatten(params, "curate"))
        report = curate.run(params, args.input, args.output)
        run.log_metrics({k: v for k, v in report.items() if isinstance(v, int)})
        run.log_artifact(Path(args.output) / curate.REPORT)
        run.log_artifact(Path(args.output) / curate.QUARANTINE)
    return report


def _cmd_degrade(args: argparse.Namespace) -> dict:
    from reca.params import flatten
    from reca.stages import degrade
    from reca.tracking.mlflow_run import stage_run

    params = _params(args, "degrade")
    with stage_run("degrade", params_file=args.params) as run:
        run.log_params(flatten(params, "degrade"))
        summary = degrade.run(params, args.curated, args.raw, args.output)
        run.log_metrics({"images": summary["images"]})
    return summary


def _cmd_sft(args: argparse.Namespace) -> dict:
    from reca.stages import sft
    from reca.tracking.mlflow_run import stage_run

    params, model = _params(args, "sft"), _params(args, "model")
    with stage_run("sft", params_file=args.params) as run:
        return sft.run(params, model, args.degraded, args.output, run)


def _cmd_embed(args: argparse.Namespace) -> dict:
    from reca.params import flatten
    from reca.stages import embed
    from reca.tracking.mlflow_run import stage_run

    params, model = _params(args, "embed"), _params(args, "model")
    with stage_run("embed", params_file=args.params) as run:
        run.log_params(flatten(params, "embed"))
        summary = embed.run(params, model, args.degraded, args.model_dir, args.output)
        run.set_tags({"reca.embedding_cache_key": summary["key"]})
    return summary


def _cmd_train(args: argparse.Namespace) -> dict:
    from reca.stages import train
    from reca.tracking.mlflow_run import stage_run

    params, model = _params(args, "train"), _params(args, "model")
    with stage_run("train", params_file=args.params) as run:
        return train.run(params, model, args.degraded, args.model_dir, args.embeddings, args.output, run)


def _cmd_evaluate(args: argparse.Namespace) -> dict:
    from reca.stages import evaluate
    from reca.tracking.mlflow_run import stage_run

    params, model = _params(args, "evaluate"), _params(args, "model")
    models = dict(pair.split("=", 1) for pair in args.model)
    with stage_run("evaluate", params_file=args.params) as run:
        return evaluate.run(params, model, args.degraded, models, args.metrics, args.report_dir, run)


def _cmd_make_world(args: argparse.Namespace) -> dict:
    from reca.data.shapeworld import write_world

    return write_world(Path(args.out), seed=args.seed, n_captioned=args.captioned, n_unlabeled=args.unlabeled,
                       n_heldout=args.heldout, bias=args.bias)


def _cmd_check_params(args: argparse.Namespace) -> dict:
    return {name: section.model_dump(mode="json") for name, section in validate_file(args.params).items()}


def _cmd_adapters(args: argparse.Namespace) -> dict:
    from reca.models import registry

    return {name: registry.get(name).__doc__.strip().splitlines()[0] for name in registry.available()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reca",
        description="Reconstruction Alignment (RecA) post-training for unified multimodal models. "
        "Each subcommand is one DVC stage; `dvc repro` runs them in order.",
        epilog="Run `reca <command> --help` for a command's inputs and outputs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    def add(name: str, fn, help_: str) -> argparse.ArgumentParser:  # noqa: ANN001
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        p.set_defaults(func=fn)
        return p

    p = add("curate", _cmd_curate, "Decode and check every raw image; write manifest, quarantine and report.")
    p.add_argument("--input", default="data/raw", help="raw image tree with split folders (default: data/raw)")
    p.add_argument("--output", default="data/curated", help="output directory (default: data/curated)")

    p = add("degrade", _cmd_degrade, "Write the understanding-input copy (resized, blurred/down-up) and the "
            "generation-target copy of every curated image.")
    p.add_argument("--curated", default="data/curated")
    p.add_argument("--raw", default="data/raw")
    p.add_argument("--output", default="data/degraded")

    p = add("sft", _cmd_sft, "Caption->image and image->caption training (builds the tiny model from scratch "
            "on the default world); writes the model RecA starts from.")
    p.add_argument("--degraded", default="data/degraded")
    p.add_argument("--output", default="models/sft")

    p = add("embed", _cmd_embed, "Cache understanding-encoder features of the degraded images (h_v inputs).")
    p.add_argument("--degraded", default="data/degraded")
    p.add_argument("--model-dir", default="models/sft")
    p.add_argument("--output", default="data/embeddings")

    p = add("train", _cmd_train, "RecA post-training with DeepSpeed: "
            "L = lambda_reca*L_reca + lambda_i2t*L_i2t + lambda_t2i*L_t2i.")
    p.add_argument("--degraded", default="data/degraded")
    p.add_argument("--model-dir", default="models/sft")
    p.add_argument("--embeddings", default="data/embeddings")
    p.add_argument("--output", default="models/reca")

    p = add("evaluate", _cmd_evaluate, "Compositional text-to-image scores and reconstruction fidelity of "
            "several models on the same prompts and seeds.")
    p.add_argument("--degraded", default="data/degraded")
    p.add_argument("--model", action="append", default=None, metavar="NAME=DIR",
                   help="a model to score (repeatable; default: sft=models/sft reca=models/reca)")
    p.add_argument("--metrics", default="metrics/metrics.json")
    p.add_argument("--report-dir", default="reports/evaluate")

    p = sub.add_parser("make-world", help="Generate the embedded default ShapeWorld data set.",
                       description="Generate the embedded default ShapeWorld data set (captioned, unlabeled, "
                       "heldout splits plus ground truth) deterministically from a seed.")
    p.add_argument("--out", default="data/raw")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--captioned", type=int, default=600)
    p.add_argument("--unlabeled", type=int, default=300)
    p.add_argument("--heldout", type=int, default=64)
    p.add_argument("--bias", type=float, default=0.9, help="usual-colour probability in the captioned split")
    p.set_defaults(func=_cmd_make_world)

    p = sub.add_parser("check-params", help="Validate every section of params.yaml and print the resolved values.")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=_cmd_check_params)

    p = sub.add_parser("adapters", help="List the registered model adapters.")
    p.set_defaults(func=_cmd_adapters)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "model", None) is None and args.command == "evaluate":
        args.model = ["sft=models/sft", "reca=models/reca"]
    try:
        result = args.func(args)
    except (ParamsError, FileNotFoundError) as err:
        print(f"reca {args.command}: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
