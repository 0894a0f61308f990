"""Janus-Pro at its published size: parameters, a memory plan for 8 x 80 GB, and measured steps at a cut depth.

Builds ``JanusARAdapter`` at a published configuration with random weights and
prints four tables:

(a) parameters of the full-depth model, counted on the meta device (no
    memory), per adapter part, trainable or frozen under RecA's default
    freezing (understanding encoder and image tokenizer frozen);
(b) the memory plan per GPU of each ZeRO stage on 8 x 80 GB at full depth
    (:mod:`reca.training.memory_plan`), with and without activation
    checkpointing;
(c) one RecA step (``L_reca + L_i2t``, the ``train`` defaults) measured at a
    cut depth (``--layers`` decoder and vision layers; ``--vocab`` cuts the
    text vocabulary, whose embedding and head dominate a cut model): a bare
    PyTorch AdamW loop and the project's :class:`~reca.training.trainer.Trainer`
    under each DeepSpeed ZeRO stage, each in its own process so each peak is
    its own: step time, samples/s, generated image tokens/s, peak memory
    (resident set on the CPU, ``max_memory_allocated`` on CUDA) and MFU
    against the matmul peak measured in the same process and dtype;
(d) the plan evaluated at the measured configuration (world size 1) beside
    the measured peak, so a reader sees how well the plan predicts.

    DS_ACCELERATOR=cpu python benchmarks/bench_real_size.py --model janus-pro-1b --layers 2 \\
        [--vocab 32768] [--batch 1] [--dtype fp32|bf16] [--stages torch,0,2,3] [--steps 2] [--checkpointing]
        [--plan-only]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))

import torch  # noqa: E402
from transformers import (  # noqa: E402
    JanusForConditionalGeneration,
)

from reca.models import text_tokenizer as tt  # noqa: E402
from reca.models.janus_ar import JanusARAdapter  # noqa: E402
from reca.models.published import PUBLISHED_JANUS  # noqa: E402
from reca.objectives.reca import CaptionedBatch, RecAObjective, ReconstructionBatch, TrainBatch  # noqa: E402
from reca.objectives.templates import CAPTION_INSTRUCTIONS, RECONSTRUCTION_TEMPLATES  # noqa: E402
from reca.training.memory_plan import (  # noqa: E402
    GIB,
    DecoderStack,
    OutputHead,
    TrainingShape,
    max_micro_batch,
    plan_memory,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FROZEN = JanusARAdapter.default_frozen  # RecA's default: understanding encoder and image tokenizer
CAPTION = "a red circle to the left of a blue square and a small green triangle on a white background"
GPU_BYTES, GPUS = 80 * GIB, 8  # an "80 GB" A100 or H100 holds 80 GiB


MODELS = PUBLISHED_JANUS


# ------------------------------------------------------------------------------------------- building
def word_tokenizer(batch: int):  # noqa: ANN201
    return tt.build_word_tokenizer([*RECONSTRUCTION_TEMPLATES[:batch], *CAPTION_INSTRUCTIONS, CAPTION])


def build_adapter(args: argparse.Namespace, *, full: bool, device: str = "cpu") -> JanusARAdapter:
    """The adapter at the published size (``full``) or at the cut depth, frozen as RecA freezes it."""
    tokenizer = word_tokenizer(args.batch)
    config = MODELS[args.model].config(tokenizer, layers=None if full else args.layers,
                                       vocab=None if full else args.vocab)
    with torch.device(device):
        model = JanusForConditionalGeneration._from_config(config, dtype=DTYPES[args.dtype])
    adapter = JanusARAdapter(model, tokenizer, image_tokenizer=None)
    adapter.set_frozen(list(FROZEN))
    return adapter


def fixed_batch(n: int, size: int, seed: int = 0) -> TrainBatch:
    """Random pixels at the model's resolution, one template and one caption per sample, nothing dropped."""
    g = torch.Generator().manual_seed(seed)

    def pixels() -> torch.Tensor:
        return torch.rand(n, 3, size, size, generator=g) * 2 - 1

    keep = torch.zeros(n, dtype=torch.bool)
    reconstruction = ReconstructionBatch(targets=pixels(), templates=list(RECONSTRUCTION_TEMPLATES[:n]),
                                         drop=keep, pixels=pixels())
    captioned = CaptionedBatch(pixels=pixels(), captions=[CAPTION] * n, instructions=[CAPTION_INSTRUCTIONS[0]] * n,
                               drop=keep)
    return TrainBatch(reconstruction=reconstruction, captioned=captioned)


# ------------------------------------------------------------------------------------- counting, plan
@dataclass(frozen=True)
class StepShape:
    """Per sample: the two passes through the language model and what they supervise."""

    reca: int  # template prompt + understanding slots + <begin_of_image> + fed image tokens
    i2t: int  # instruction prompt + understanding slots + caption + EOS
    caption: int  # supervised caption tokens (lm_head positions)
    understanding: int  # h_v tokens per image
    generated: int  # image tokens per image


def step_shape(adapter: JanusARAdapter, batch: TrainBatch) -> StepShape:
    prompter, n_und = adapter.prompter, adapter.num_understanding_tokens
    gen = adapter.tokens_per_image
    recon, cap = batch.reconstruction, batch.captioned
    reca = max(len(prompter.ids(t, n_und)) + 1 for t in recon.templates) + gen - 1
    answer = max(len(prompter.answer_ids(c)) for c in cap.captions)
    i2t = max(len(prompter.ids(i, n_und)) for i in cap.instructions) + answer
    return StepShape(reca=reca, i2t=i2t, caption=answer, understanding=n_und, generated=gen)


def part_counts(adapter: JanusARAdapter) -> list[tuple[str, int, bool]]:
    """(part, parameters, trainable) for every adapter part, plus the untied ``lm_head`` (no part of its own)."""
    rows = [(name, sum(p.numel() for p in module.parameters()), all(p.requires_grad for p in module.parameters()))
            for name, module in adapter.parts().items()]
    head = adapter.model.lm_head.weight
    if head is not adapter.model.get_input_embeddings().weight:
        rows.append(("lm_head", head.numel(), head.requires_grad))
    return rows


def training_shape(adapter: JanusARAdapter, shape: StepShape) -> TrainingShape:
    rows = part_counts(adapter)
    cfg = adapter.model.config
    text, vq = cfg.text_config, cfg.vq_config
    embed = adapter.model.get_input_embeddings().weight.numel()
    stack = DecoderStack(layers=text.num_hidden_layers, hidden=text.hidden_size,
                         intermediate=text.intermediate_size, heads=text.num_attention_heads,
                         sequences=(shape.reca, shape.i2t))
    heads = (OutputHead("generation_head", shape.generated, vq.num_embeddings),
             OutputHead("lm_head", shape.caption, text.vocab_size))
    return TrainingShape(trainable=sum(n for _, n, t in rows if t), frozen=sum(n for _, n, t in rows if not t),
                         largest_layer=embed, stack=stack, heads=heads)


def vq_encode_flops(adapter: JanusARAdapter) -> float:
    """FLOPs of one VQ encode at the model's resolution (its convolutions), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    vq = adapter.model.model.vqmodel
    size = adapter.generation_size
    with torch.device("meta"):
        meta = type(vq)(vq.config)
        pixels = torch.zeros(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta.encode(pixels)
    return float(counter.get_total_flops())


FLOPS_FORMULA = ("6·Σ(trainable params x tokens through them) + 12·layers·hidden·Σseq² (attention, fwd+bwd) "
                 "+ 2·Σ(frozen params x tokens) + 4·vision_layers·vision_hidden·576² per image + VQ-encoder "
                 "convolutions (counted on the meta device)")


def formula_flops(adapter: JanusARAdapter, shape: StepShape, batch: int, vq_flops: float) -> float:
    """FLOPs of one RecA step (``L_reca + L_i2t``) from parameter counts and sequence lengths."""
    parts = {name: n for name, n, _ in part_counts(adapter)}
    cfg = adapter.model.config
    text, vision = cfg.text_config, cfg.vision_config
    decoder = parts["language_model"] - adapter.model.get_input_embeddings().weight.numel()
    images = 2  # h_v of the degraded reconstruction input and of the captioned image
    trainable = (decoder * (shape.reca + shape.i2t) + parts["generation_head"] * shape.generated
                 + parts["generation_aligner"] * (shape.generated - 1)
                 + parts["understanding_projector"] * shape.understanding * images
                 + parts.get("lm_head", 0) * shape.caption)
    attention = 12 * text.num_hidden_layers * text.hidden_size * (shape.reca**2 + shape.i2t**2)
    frozen = images * (2 * parts["understanding_encoder"] * shape.understanding
                       + 4 * vision.num_hidden_layers * vision.hidden_size * shape.understanding**2)
    return batch * (6 * trainable + attention + frozen + vq_flops)


# ------------------------------------------------------------------------------------------ measuring
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def current_bytes() -> float:
    """Memory in use now: allocated GPU memory on CUDA, the resident set size on the CPU."""
    if DEVICE == "cuda":
        return float(torch.cuda.memory_allocated())
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes() -> float:
    if DEVICE == "cuda":
        return float(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def matmul_peak(dtype: torch.dtype, n: int = 2048, trials: int = 5, seconds: float = 0.4) -> float:
    """FLOP/s of a large square matmul in ``dtype`` on this device and thread count: the best of ``trials``
    (on a shared machine a single timing measures the neighbours as much as the matmul)."""
    a, b = torch.randn(n, n, dtype=dtype, device=DEVICE), torch.randn(n, n, dtype=dtype, device=DEVICE)
    torch.mm(a, b)
    best = 0.0
    for _ in range(trials):
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            torch.mm(a, b)
            reps += 1
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


class FixedBatches:
    """The planner the trainer asks for batches: the same batch every step; records when each was asked for."""

    def __init__(self, batch: TrainBatch, count_step: int = 0) -> None:
        self.fixed, self.times, self.count_step = batch, [], count_step
        from torch.utils.flop_counter import FlopCounterMode

        self.counter = FlopCounterMode(display=False)

    def batch(self, step: int, micro: int = 0) -> TrainBatch:
        # FLOPs of step `count_step` (forward, backward, optimiser): counted from its batch to the next one.
        if step == self.count_step + 1:
            self.counter.__exit__(None, None, None)
        self.times.append(time.perf_counter())
        if step == self.count_step:
            self.counter.__enter__()
        return self.fixed


class PeakPhases:
    """Which phase of a step (forward, backward, optimizer step) last raised the process's peak memory."""

    def __init__(self) -> None:
        self.phase, self.level = "set-up", peak_bytes()

    def wrap(self, name: str, fn):  # noqa: ANN001, ANN202
        def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            out = fn(*args, **kwargs)
            now = peak_bytes()
            if now > self.level:
                self.level, self.phase = now, name
            return out

        return wrapped


def measure(args: argparse.Namespace, variant: str) -> dict[str, float | str]:
    """One variant (``torch`` or a ZeRO stage) at the cut depth, in this process."""
    if args.warmup < 1:
        raise SystemExit("--warmup must be at least 1: the first step's FLOPs are counted, not timed")
    if variant != "torch":
        import deepspeed  # noqa: F401 - imported before the baseline: its imports (mlflow, ...) are runtime too
    torch.manual_seed(0)
    baseline = current_bytes()
    peak_flops = matmul_peak(DTYPES[args.dtype])
    adapter = build_adapter(args, full=False, device=DEVICE)
    if args.checkpointing:
        adapter.enable_activation_checkpointing()
    built = current_bytes()
    batch = fixed_batch(args.batch, adapter.understanding_size).to(DEVICE)
    objective = RecAObjective(adapter, lambda_reca=1.0, lambda_i2t=1.0, lambda_t2i=0.0)
    planner, phases = FixedBatches(batch), PeakPhases()
    total = args.warmup + args.steps
    if variant == "torch":
        optimizer = torch.optim.AdamW(adapter.trainable_parameters(), lr=1e-5, betas=(0.9, 0.95))
        ready = current_bytes()

        def update() -> None:
            torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        forward, update = phases.wrap("forward", objective), phases.wrap("step", update)
        for step in range(total + 1):
            b = planner.batch(step)
            if step == total:
                break
            loss, _ = forward(b)
            phases.wrap("backward", loss.backward)()
            update()
        end = planner.times[-1]
    else:
        from reca.params import TrainParams
        from reca.training.trainer import Trainer

        params = TrainParams(steps=total, batch_size=args.batch, lr=1e-5, warmup_steps=1, zero_stage=int(variant),
                             precision=args.dtype, checkpoint_every=10**6, log_every=10**6)
        with tempfile.TemporaryDirectory() as ckpt:
            trainer = Trainer(objective, planner, params, ckpt, frozen_parts=FROZEN, root=REPO)
            trainer.setup()
            ready = current_bytes()
            engine = trainer.engine  # nn.Module.__call__ and the trainer look these up on the instance
            for name in ("forward", "backward", "step"):
                setattr(engine, name, phases.wrap(name, getattr(engine, name)))
            trainer.train()
            end = time.perf_counter()
            trainer.cleanup()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
        end = max(end, time.perf_counter())
    seconds = (end - planner.times[args.warmup]) / args.steps
    return {"seconds": seconds, "peak": peak_bytes(), "baseline": baseline, "built": built, "ready": ready,
            "matmul_peak": peak_flops, "peak_phase": phases.phase,
            "flops": float(planner.counter.get_total_flops()), "tokens": objective.supervised_tokens(batch)}


def run_variant(args: argparse.Namespace, variant: str, argv: list[str]) -> dict[str, float] | None:
    """``measure`` in a fresh process, so that its peak memory is its own."""
    cmd = [sys.executable, __file__, *argv, "--worker", variant]
    t0 = time.perf_counter()
    # A fixed mmap threshold hands every freed tensor above 128 KiB back to the kernel at once, so the
    # resident peak counts live tensors rather than what glibc's heap kept after earlier frees.
    env = {"MALLOC_MMAP_THRESHOLD_": "131072", **os.environ}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
        print(f"[{variant}] failed (exit {proc.returncode}):\n{tail}", file=sys.stderr)
        return None
    print(f"[{variant}] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------------------- printing
def gib(x: float) -> str:
    return f"{x / GIB:8.2f}"


def table(header: list[str], rows: list[list[str]]) -> None:
    """A markdown table: the first column left-aligned, numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print()


def print_counts(adapter: JanusARAdapter, name: str) -> None:
    rows = part_counts(adapter)
    trainable = sum(n for _, n, t in rows if t)
    frozen = sum(n for _, n, t in rows if not t)
    text = sum(n for part, n, _ in rows if part in ("language_model", "lm_head"))
    print(f"(a) {name} at full depth, counted on the meta device (RecA default freezing: {', '.join(FROZEN)})\n")
    table(["part", "params (M)", "RecA"],
          [[part, f"{n / 1e6:.1f}", "trainable" if t else "frozen"] for part, n, t in rows]
          + [["text LM alone (decoder, embeddings, lm_head)", f"{text / 1e6:.1f}", ""],
             ["total", f"{(trainable + frozen) / 1e6:.1f}", f"{trainable / 1e6:.1f} M trainable"]])


def print_plan(shape: TrainingShape, args: argparse.Namespace, flops: float) -> None:
    s = shape.stack
    print(f"(b) memory plan per GPU, {GPUS} x {GPU_BYTES / GIB:.0f} GiB, bf16 mixed precision (fp32 master + Adam), "
          f"micro-batch {args.batch}; sequences per sample {s.sequences} tokens through {s.layers} layers; "
          f"FLOPs/step (formula) {flops / 1e12:.2f} T.\n    Left: no activation checkpointing; right: "
          "checkpointing every decoder layer. 'max batch': the largest micro-batch whose plan fits. GiB:\n")
    rows = []
    for stage in (0, 1, 2, 3):
        p = plan_memory(shape, precision="bf16", zero_stage=stage, world_size=GPUS, micro_batch=args.batch)
        c = plan_memory(shape, precision="bf16", zero_stage=stage, world_size=GPUS, micro_batch=args.batch,
                        checkpointing=True)
        most, most_ckpt = (max_micro_batch(shape, GPU_BYTES, precision="bf16", zero_stage=stage, world_size=GPUS,
                                           checkpointing=ckpt) for ckpt in (False, True))
        rows.append([f"ZeRO-{stage}", gib(p.weights), gib(p.gradients), gib(p.optimizer), gib(p.temporaries),
                     gib(p.activations), gib(p.total), "yes" if p.fits(GPU_BYTES) else "NO", str(most),
                     gib(c.activations), gib(c.total), "yes" if c.fits(GPU_BYTES) else "NO", str(most_ckpt)])
    table(["stage", "weights", "grads", "optimizer", "step temps", "activ.", "total", "fits", "max batch",
           "activ. ckpt", "total ckpt", "fits", "max batch"], rows)


def print_measured(results: dict[str, dict[str, float]], args: argparse.Namespace, formula: float) -> None:
    first = next(iter(results.values()))
    extra = ", activation checkpointing" if args.checkpointing else ""
    print(f"(c) measured at --layers {args.layers} --vocab {args.vocab or 'published'}, {args.dtype}, batch "
          f"{args.batch}{extra}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"threads={torch.get_num_threads()}, device={DEVICE}.\n"
          f"    model FLOPs/step (formula) {formula / 1e12:.3f} T = {FLOPS_FORMULA}.\n"
          f"    counted FLOPs/step (torch FlopCounterMode on step 0: matmuls, convolutions, attention; recomputation "
          f"included) {first['flops'] / 1e12:.3f} T, {first['flops'] / formula:.2f} x the formula.\n"
          f"    MFU = model FLOPs per step / step time / {args.dtype} matmul peak (2048^3 torch.mm, best of 5, same "
          "process). tokens/s: generated image tokens supervised (RecAObjective.supervised_tokens).\n")
    base = results.get("torch", first)["seconds"]
    versus = "vs bare" if "torch" in results else "vs first"
    rows = []
    for variant, r in results.items():
        name = "bare PyTorch AdamW" if variant == "torch" else f"Trainer, DeepSpeed ZeRO-{variant}"
        achieved = formula / r["seconds"]
        rows.append([name, f"{r['seconds'] * 1e3:.0f}", f"{r['seconds'] / base:.2f}x", f"{args.batch / r['seconds']:.3f}",
                     f"{r['tokens'] / r['seconds']:.1f}", gib(r["peak"]), f"{r['flops'] / 1e12:.3f}",
                     f"{achieved / 1e9:.1f}", f"{r['matmul_peak'] / 1e9:.1f}", f"{achieved / r['matmul_peak']:.1%}"])
    table(["variant", "ms/step", versus, "samples/s", "tokens/s", "peak GiB", "counted TFLOP", "model GFLOP/s",
           "matmul peak GFLOP/s", "MFU"], rows)


def print_check(results: dict[str, dict[str, float]], shape: TrainingShape, args: argparse.Namespace) -> None:
    ckpt = ", activation checkpointing" if args.checkpointing else ""
    print(f"(d) plan at the measured configuration (world size 1, {args.dtype}, micro-batch {args.batch}{ckpt}) beside "
          "what was measured. 'runtime': the process before the model was built (interpreter, torch, DeepSpeed); "
          "'built': the model's weights (resident after building, less runtime); 'setup': what the optimizer or "
          "engine set-up added before the first step; 'peak': the step's peak less runtime, and the phase that "
          "reached it. GiB:\n")
    rows = []
    for variant, r in results.items():
        name = "bare PyTorch AdamW" if variant == "torch" else f"ZeRO-{variant}"
        measured = [gib(r["baseline"]), gib(r["built"] - r["baseline"]), gib(r["ready"] - r["built"]),
                    gib(r["peak"] - r["baseline"]), str(r["peak_phase"])]
        if variant == "torch" and args.dtype != "fp32":
            # a bf16 AdamW without fp32 master weights is not what the plan models
            rows.append([name, *["-"] * 6, *measured, "-"])
            continue
        stage = 0 if variant == "torch" else int(variant)
        p = plan_memory(shape, precision=args.dtype, zero_stage=stage, world_size=1, micro_batch=args.batch,
                        checkpointing=args.checkpointing)
        rows.append([name, gib(p.weights), gib(p.gradients), gib(p.optimizer), gib(p.temporaries),
                     gib(p.activations), gib(p.total), *measured, f"{(r['peak'] - r['baseline']) / p.total:.2f}"])
    table(["variant", "weights", "grads", "optimizer", "step temps", "activ.", "plan total", "runtime", "built", "setup", "peak",
           "peak in", "peak / plan"], rows)


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="janus-pro-1b")
    parser.add_argument("--layers", type=int, default=2, help="Decoder and vision layers of the measured model.")
    parser.add_argument("--vocab", type=int, default=None,
                        help="Text vocabulary of the measured model (default: the published one).")
    parser.add_argument("--batch", type=int, default=1, help="Micro-batch: samples per loss term.")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="Measured precision.")
    parser.add_argument("--stages", default="torch,0,2,3",
                        help="Comma-separated variants to measure: torch (bare AdamW loop) and ZeRO stages.")
    parser.add_argument("--steps", type=int, default=2, help="Timed steps per variant.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed steps first (the first one is FLOP-counted).")
    parser.add_argument("--checkpointing", action="store_true",
                        help="Measure with activation checkpointing (train.activation_checkpointing).")
    parser.add_argument("--plan-only", action="store_true", help="Count and plan at full depth; measure nothing.")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        print(json.dumps(measure(args, args.worker)), flush=True)
        return 0
    t0 = time.perf_counter()
    full = build_adapter(args, full=True, device="meta")
    batch = fixed_batch(args.batch, full.understanding_size)
    shape = step_shape(full, batch)
    vq_flops = vq_encode_flops(full)
    print_counts(full, args.model)
    print_plan(training_shape(full, shape), args, formula_flops(full, shape, args.batch, vq_flops))
    if not args.plan_only:
        results = {}
        for variant in args.stages.split(","):
            result = run_variant(args, variant, argv)
            if result is not None:
                results[variant] = result
        cut = build_adapter(args, full=False, device="meta")
        if results:
            print_measured(results, args, formula_flops(cut, shape, args.batch, vq_flops))
            print_check(results, training_shape(cut, shape), args)
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
