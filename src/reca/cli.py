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

from reca.params import ParamsError, load_section

# Quiet, local tools (see STACK notes): no telemetry, no analytics daemons.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _params(args: argparse.Namespace, section: str):  # noqa: ANN202 - returns the section's model
    if section == "model":  # `model.tiny` belongs to the adapter: checked against it, with the same errors
        from reca.models.model_params import load_model_params

        return load_model_params(args.params)
    return load_section(section, args.params)


def _cmd_curate(args: argparse.Namespace) -> dict:
    from reca.params import flatten
    from reca.stages import curate
    from reca.tracking.mlflow_run import stage_run

    params = _params(args, "curate")
    if args.workers is not None:
        params.workers = args.workers
    with stage_run("curate", params_file=args.params) as run:
        run.log_params(flatten(params, "curate"))
        return curate.run(params, args.input, args.output, run)


def _cmd_degrade(args: argparse.Namespace) -> dict:
    from reca.params import flatten
    from reca.stages import degrade
    from reca.tracking.mlflow_run import stage_run

    params = _params(args, "degrade")
    if args.workers is not None:
        params.workers = args.workers
    with stage_run("degrade", params_file=args.params) as run:
        run.log_params(flatten(params, "degrade"))
        return degrade.run(params, args.curated, args.raw, args.output, run)


def _relaunch(args: argparse.Namespace, stage: str, params) -> dict:  # noqa: ANN001 - a LaunchParams section
    """Re-execute this very command under the launcher ``params`` name, and wait for the workers."""
    import subprocess

    from reca.tracking.mlflow_run import stage_run
    from reca.training.launch import LaunchError, launch_command, worker_environment

    # This process is only the launcher: it owns the MLflow run, the workers log into it.
    with stage_run(stage, params_file=args.params) as run:
        cmd = launch_command(params, args.argv)
        print("reca: launching " + " ".join(cmd), file=sys.stderr, flush=True)
        done = subprocess.run(cmd, env=worker_environment(run.run_id), check=False)
        if done.returncode != 0:
            raise LaunchError(f"{stage} workers failed (exit {done.returncode}); their output is above")
    return {"launched": cmd, "processes": params.processes, "hostfile": params.hostfile}


def _training_stage(args: argparse.Namespace, stage: str, call) -> dict:  # noqa: ANN001
    """Run `sft`/`train` here, or relaunch this very command across processes when params ask for it."""
    from reca.tracking.mlflow_run import stage_run
    from reca.tracking.reachability import ensure_reachable
    from reca.training.launch import needs_launch

    params, model = _params(args, stage), _params(args, "model")
    ensure_reachable(fallback_local=params.mlflow_fallback_local)
    if needs_launch(params):
        return _relaunch(args, stage, params)
    with stage_run(stage, params_file=args.params) as run:
        return call(params, model, run)


def _reca_templates(args: argparse.Namespace) -> tuple[str, ...]:
    """The template bank `train` will draw from, so SFT teaches the words and the condition RecA uses."""
    from reca.objectives.templates import load_templates
    from reca.params import load_raw, parse_section

    # A params file without a train section (SFT only) gets the built-in bank, as train would.
    raw = load_raw(args.params)
    template_file = parse_section("train", raw["train"], args.params).template_file if "train" in raw else None
    return load_templates(template_file).templates


def _cmd_sft(args: argparse.Namespace) -> dict:
    from reca.stages import sft

    templates = _reca_templates(args)
    return _training_stage(args, "sft", lambda params, model, run: sft.run(
        params, model, args.degraded, args.output, run, templates=templates))


def _cmd_start_model(args: argparse.Namespace) -> dict:
    from reca.stages import sft

    templates = _reca_templates(args)
    return _training_stage(args, "start_model", lambda params, model, run: sft.run_start_model(
        params, model, args.degraded, args.output, run, templates=templates))


def _cmd_post_sft(args: argparse.Namespace) -> dict:
    from reca.stages import sft

    templates = _reca_templates(args)
    return _training_stage(args, "post_sft", lambda params, model, run: sft.run_post(
        params, model, args.degraded, args.model_dir, args.output, run, templates=templates))


def _cmd_embed(args: argparse.Namespace) -> dict:
    from reca.params import flatten
    from reca.stages import embed
    from reca.tracking.mlflow_run import stage_run
    from reca.training.launch import needs_launch

    params, model = _params(args, "embed"), _params(args, "model")
    if needs_launch(params):  # every worker encodes its share of the shards
        return _relaunch(args, "embed", params)
    with stage_run("embed", params_file=args.params) as run:
        run.log_params(flatten(params, "embed"))
        return embed.run(params, model, args.degraded, args.model_dir, args.output, run)


def _cmd_train(args: argparse.Namespace) -> dict:
    from reca.stages import train

    return _training_stage(args, "train", lambda params, model, run: train.run(
        params, model, args.degraded, args.model_dir, args.embeddings, args.output, run))


def _cmd_evaluate(args: argparse.Namespace) -> dict:
    from reca.stages import evaluate
    from reca.tracking.mlflow_run import stage_run
    from reca.training.launch import needs_launch

    params, model = _params(args, "evaluate"), _params(args, "model")
    bad = [pair for pair in args.model if "=" not in pair]
    if bad:
        raise ParamsError(f"--model takes NAME=DIR, got {bad[0]!r}")
    models = dict(pair.split("=", 1) for pair in args.model)
    if needs_launch(params):  # every worker generates and scores its share of the batches
        return _relaunch(args, "evaluate", params)
    with stage_run("evaluate", params_file=args.params) as run:
        return evaluate.run(params, model, args.degraded, models, args.metrics, args.report_dir, run,
                            plot_data_path=args.plot_data, chart_path=args.chart)


def _cmd_geneval_score(args: argparse.Namespace) -> dict:
    from reca.evaluation.geneval import summarize
    from reca.evaluation.geneval_folder import score_folder
    from reca.fileio import write_json, write_jsonl
    from reca.stages.evaluate import build_scorer

    detector, colours, rules = build_scorer(_params(args, "evaluate"))
    rows, problems = score_folder(args.folder, detector, colours, rules)
    write_jsonl(args.out, rows)
    summary = {"results": str(args.out), "summary": summarize(rows), "problems": problems}
    if args.summary:
        write_json(args.summary, summary)
    return summary


def _cmd_make_world(args: argparse.Namespace) -> dict:
    from reca.shapeworld.writer import write_world_from_args

    try:
        return write_world_from_args(args)
    except ValueError as err:
        raise ParamsError(f"make-world: {err}") from None


def _cmd_check_params(args: argparse.Namespace) -> dict:
    from reca.models.model_params import validate_params_file

    return {name: section.model_dump(mode="json") for name, section in validate_params_file(args.params).items()}


def _cmd_adapters(args: argparse.Namespace) -> dict:
    from reca.models import registry

    return {name: registry.get(name).__doc__.strip().splitlines()[0] for name in registry.available()}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _user_error(args: argparse.Namespace, err: Exception) -> SystemExit:
    print(f"reca {args.command}: error: {err}", file=sys.stderr)
    return SystemExit(2)


def _inference_result(args: argparse.Namespace, adapter, images, text: str) -> dict:  # noqa: ANN001
    from reca.inference import save_images, unknown_words

    unknown = unknown_words(adapter, text)
    if unknown:
        print(f"reca {args.command}: warning: the model's tokenizer does not know {unknown}; it reads them as "
              "<unk> (a model trained on the default world knows only its captions' and templates' words)",
              file=sys.stderr)
    paths = save_images(images, args.out, scale=args.scale)
    return {"model": str(args.model), "text": text, "seed": args.seed, "images": [str(p) for p in paths],
            "size": list(images[0].size), "unknown_words": unknown}


def _cmd_generate(args: argparse.Namespace) -> dict:
    from reca.inference import generate_images, load_model

    adapter = load_model(args.model, device=args.device, trust_remote_code=args.trust_remote_code)
    images = generate_images(adapter, args.prompt, n=args.num_images, seed=args.seed,
                             guidance_scale=args.guidance_scale, temperature=args.temperature)
    return _inference_result(args, adapter, images, args.prompt)


def _cmd_edit(args: argparse.Namespace) -> dict:
    from reca.data.images import ImageRejected
    from reca.inference import edit_images, load_model, load_source_image

    adapter = load_model(args.model, device=args.device, trust_remote_code=args.trust_remote_code)
    try:
        source = load_source_image(args.image, adapter.understanding_size)
    except ImageRejected as err:
        raise _user_error(args, f"{args.image}: cannot use this image ({err})") from None
    images = edit_images(adapter, source, args.instruction, n=args.num_images, seed=args.seed,
                         guidance_scale=args.guidance_scale, temperature=args.temperature)
    return {"source": str(args.image), **_inference_result(args, adapter, images, args.instruction)}


def _cmd_report(args: argparse.Namespace) -> dict:
    from reca.reporting.run_report import ReportRequest, write_report

    request = ReportRequest(run_ids=args.run_ids, last=args.last, exp_names=args.exp or [],
                            experiment=args.experiment, tracking_uri=args.tracking_uri, title=args.title)
    try:
        return write_report(request, args.out, log_to_mlflow=not args.no_log)
    except LookupError as err:
        raise _user_error(args, err) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reca",
        description="Reconstruction Alignment (RecA) post-training for unified multimodal models. "
        "curate, degrade, sft, embed, train, post-sft and evaluate are the DVC stages `dvc repro` runs in "
        "order; "
        "generate and edit use a trained model; report writes an HTML report of MLflow runs; the rest "
        "make data, check params and list adapters.",
        epilog="Run `reca <command> --help` for a command's inputs and outputs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    def add(name: str, fn, help_: str) -> argparse.ArgumentParser:  # noqa: ANN001
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        p.set_defaults(func=fn)
        return p

    p = add("curate", _cmd_curate, "Decode and check every raw image (in parallel); set aside corrupt, tiny, "
            "extreme and duplicate ones with reasons; write manifest, quarantine, duplicates, report and the "
            "great_expectations validation. The input is never modified.")
    p.add_argument("--input", default="data/raw",
                   help="a folder whose top-level folders are splits, a list file (.txt/.lst) of paths, or a "
                   "webdataset .tar shard; folders may hold .tar shards (default: data/raw)")
    p.add_argument("--output", default="data/curated", help="output directory (default: data/curated)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes, overriding curate.workers (0 = every core); outputs do not change")

    p = add("degrade", _cmd_degrade, "Write the understanding-input copy (resized, blurred/down-up) and the "
            "generation-target copy of every curated image, in parallel.")
    p.add_argument("--curated", default="data/curated", help="curate's output directory (default: data/curated)")
    p.add_argument("--raw", default="data/raw",
                   help="the input curate read; manifest paths are relative to it (default: data/raw)")
    p.add_argument("--output", default="data/degraded", help="output directory (default: data/degraded)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes, overriding degrade.workers (0 = every core); outputs do not change")

    p = add("start-model", _cmd_start_model, "Train the tiny starting model from scratch (params sections "
            "start_model and model.tiny) and write it with its lineage.json. The embedded default ships this model "
            "in its DVC remote: `dvc repro` never runs this (the stage is frozen); `make start-model` does.")
    p.add_argument("--degraded", default="data/degraded", help="degrade stage output (default: data/degraded)")
    p.add_argument("--output", default="models/start", help="where the model goes (default: models/start)")

    p = add("sft", _cmd_sft, "Caption->image and image->caption training of model.pretrained (or of a tiny "
            "model built from scratch when it is null); with sft.enabled false, passes model.pretrained through. "
            "Writes the model RecA starts from.")
    p.add_argument("--degraded", default="data/degraded", help="degrade stage output (default: data/degraded)")
    p.add_argument("--output", default="models/sft", help="where the HF-format model goes (default: models/sft)")

    p = add("embed", _cmd_embed, "Cache understanding-encoder features of the degraded images (h_v inputs) in "
            "safetensors shards keyed by the encoder's weights, the model revision and the degrade settings; "
            "a rerun reuses every shard that still matches (resume after an interruption).")
    p.add_argument("--degraded", default="data/degraded", help="degrade's output directory (default: data/degraded)")
    p.add_argument("--model-dir", default="models/sft", help="the model RecA starts from (default: models/sft)")
    p.add_argument("--output", default="data/embeddings", help="cache directory (default: data/embeddings)")

    p = add("train", _cmd_train, "RecA post-training with DeepSpeed: "
            "L = lambda_reca*L_reca + lambda_i2t*L_i2t + lambda_t2i*L_t2i.")
    p.add_argument("--degraded", default="data/degraded", help="degrade stage output (default: data/degraded)")
    p.add_argument("--model-dir", default="models/sft", help="the model to start from (default: models/sft)")
    p.add_argument("--embeddings", default="data/embeddings", help="embed stage cache of h_v features (default: data/embeddings)")
    p.add_argument("--output", default="models/reca", help="where the RecA model goes (default: models/reca)")

    p = add("post-sft", _cmd_post_sft, "SFT after RecA (params section post_sft): the RecA->SFT order of the "
            "paper's ablation. With post_sft.steps 0 (the default) the RecA model passes through unchanged as "
            "the final model that evaluate scores.")
    p.add_argument("--degraded", default="data/degraded", help="degrade stage output (default: data/degraded)")
    p.add_argument("--model-dir", default="models/reca", help="the RecA model (default: models/reca)")
    p.add_argument("--output", default="models/final", help="where the final model goes (default: models/final)")

    p = add("evaluate", _cmd_evaluate, "GenEval scores (six tasks, GenEval's rules) and reconstruction "
            "fidelity (PSNR, SSIM, h_v cosine) of several models on the same prompts and seeds; writes metrics, "
            "a per-task bar chart, a comparison table, sample grids and each model's GenEval image folder.")
    p.add_argument("--degraded", default="data/degraded", help="degrade's output directory (default: data/degraded)")
    p.add_argument("--model", action="append", default=None, metavar="NAME=DIR",
                   help="a model to score (repeatable; default: sft=models/sft reca=models/reca)")
    p.add_argument("--metrics", default="metrics/metrics.json", help="metrics JSON (default: metrics/metrics.json)")
    p.add_argument("--plot-data", default="metrics/per_task.json",
                   help="per-task table for dvc plots (default: metrics/per_task.json)")
    p.add_argument("--chart", default="metrics/per_task.png",
                   help="per-task bar chart PNG (default: metrics/per_task.png)")
    p.add_argument("--report-dir", default="reports/evaluate",
                   help="grids, comparison.md, GenEval folders and results (default: reports/evaluate)")

    p = add("geneval-score", _cmd_geneval_score, "Score a GenEval-format image folder made elsewhere "
            "(<dir>/<NNNNN>/metadata.jsonl + samples/<N>.png) with the detector, colour classifier and GenEval "
            "options of params.yaml's `evaluate` section; write GenEval result rows and print the summary.")
    p.add_argument("folder", help="the GenEval image folder")
    p.add_argument("--out", default="geneval_results.jsonl", help="result rows (default: geneval_results.jsonl)")
    p.add_argument("--summary", default=None, help="also write the summary JSON here")

    p = sub.add_parser("make-world", help="Generate the embedded default ShapeWorld data set.",
                       description="Generate the embedded default ShapeWorld data set (captioned, unlabeled, "
                       "heldout splits plus ground truth) deterministically from a seed.")
    from reca.shapeworld.writer import add_world_arguments

    add_world_arguments(p)
    p.set_defaults(func=_cmd_make_world)

    p = sub.add_parser("check-params", help="Validate every section of params.yaml and print the resolved values.",
                       description="Validate every section of params.yaml (unknown keys and bad values are errors "
                       "naming the key and what is allowed) and print the resolved values, defaults included.")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.set_defaults(func=_cmd_check_params)

    p = sub.add_parser("apply-preset", help="Merge a recipe preset (configs/presets/*.yaml) into params.yaml.",
                       description="Merge a preset's keys into params.yaml in place (comments kept), after "
                       "validating the result: e.g. configs/presets/janus-pro-1b-8gpu.yaml.")
    p.add_argument("preset", help="a partial params file")
    p.add_argument("--params", default="params.yaml", help="params file to update (default: params.yaml)")
    p.set_defaults(func=_cmd_apply_preset)

    p = sub.add_parser("adapters", help="List the registered model adapters.",
                       description="List the adapter names model.adapter accepts, one line each.")
    p.set_defaults(func=_cmd_adapters)

    def add_inference(name: str, fn, help_: str, out: str) -> argparse.ArgumentParser:  # noqa: ANN001
        p = sub.add_parser(name, help=help_, description=help_ + " The JSON printed lists the images written.")
        p.add_argument("--model", default="models/reca",
                       help="a model directory a stage wrote, or an MLflow URI: models:/NAME/VERSION, "
                       "models:/NAME@ALIAS, runs:/RUN_ID/model (default: models/reca)")
        p.add_argument("--out", default=out, help=f"output PNG; with -n > 1, <stem>-0.png, <stem>-1.png, ... "
                       f"(default: {out})")
        p.add_argument("-n", "--num-images", type=_positive_int, default=1, help="images to sample (default: 1)")
        p.add_argument("--seed", type=int, default=0, help="sampling seed; the same seed gives the same images "
                       "(default: 0)")
        p.add_argument("--guidance-scale", type=float, default=1.0,
                       help="classifier-free guidance scale, 1 = off (default: 1.0)")
        p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
        p.add_argument("--scale", type=_positive_int, default=1,
                       help="upscale the saved PNG this many times, nearest neighbour, for viewing (default: 1)")
        p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
        p.add_argument("--trust-remote-code", action="store_true",
                       help="allow model code shipped with the checkpoint (off by default)")
        p.set_defaults(func=fn)
        return p

    p = add_inference("generate", _cmd_generate, "Text-to-image with a trained model: the prompt alone is the "
                      "condition, exactly as at deployment (RecA adds nothing at inference).", "generated.png")
    p.add_argument("prompt", help='what to draw, e.g. "a yellow circle left of a blue square"')

    p = add_inference("edit", _cmd_edit, "Edit an image with a trained model: the condition is the image's "
                      "understanding embeddings (h_v) plus the instruction.", "edited.png")
    p.add_argument("image", help="the source image (PNG, JPEG, WebP, ...; centre-cropped to the model's input)")
    p.add_argument("instruction", help='the edit, e.g. "make the circle red"')

    p = sub.add_parser("report", help="Write a self-contained HTML report of pipeline runs and log it to MLflow.",
                       description="Write a self-contained HTML report (no network needed to view it: charts and "
                       "images are embedded) of one pipeline run or several side by side: metric tables, per-task "
                       "bar charts, loss curves, sample grids, and the params that differ. The report is logged "
                       "to MLflow: to the run itself for one run, to a new `report` run for several.",
                       epilog="With no run selected, reports the latest pipeline run.")
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID",
                   help="MLflow run ids: pipeline (parent) runs, or single stage runs")
    p.add_argument("--last", type=_positive_int, default=None, metavar="N", help="the N latest pipeline runs")
    p.add_argument("--exp", action="append", metavar="NAME",
                   help="the pipeline run of DVC experiment NAME (`dvc exp show` names; repeatable)")
    p.add_argument("--experiment", default=None,
                   help="MLflow experiment to search (default: $RECA_EXPERIMENT or reca)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db in this repository)")
    p.add_argument("--out", default="reports/report.html", help="output HTML (default: reports/report.html)")
    p.add_argument("--title", default=None, help="report title (default: names the runs)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    p.set_defaults(func=_cmd_report)
    return parser


def _cmd_apply_preset(args: argparse.Namespace) -> dict:
    from reca.presets import apply_preset

    return {"preset": args.preset, "changed": apply_preset(args.preset, args.params)}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # a launcher re-executes exactly this command in every worker
    if getattr(args, "model", None) is None and args.command == "evaluate":
        args.model = ["sft=models/sft", "reca=models/reca"]
    try:
        result = args.func(args)
    except (ParamsError, FileNotFoundError) as err:
        print(f"reca {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        # Errors we raise with the fix in the message: an unreachable tracking server, failed workers.
        from reca.tracking.reachability import TrackingUnreachableError
        from reca.training.launch import LaunchError

        if not isinstance(err, (TrackingUnreachableError, LaunchError)):
            raise
        print(f"reca {args.command}: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
