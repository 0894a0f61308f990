"""Typed, validated schema of ``params.yaml``: one section per pipeline stage.

Each DVC stage reads only its own section (plus ``model`` for stages that load
the model), so ``dvc params diff`` says exactly which stage a change reruns.
Every field is a named, documented knob; an unknown key or a bad value stops
the stage with a message that names the key and what is allowed.

The schema imports no model, data or evaluation code (a config that reaches
into them for defaults makes a circle): the shared base is ``reca.schema``,
the default world's vocabulary is ``reca.vocabulary``, and the adapter-owned
parts of ``model`` are checked by ``reca.models.model_params``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from reca.schema import ParamsError, Section, error_lines, section_error
from reca.vocabulary import GENEVAL_COLOURS, SHAPES, USUAL_COLOUR, WORLD_COLOURS

# --------------------------------------------------------------------------- data


class CurateParams(Section):
    """``curate``: which raw images are usable (input: a folder tree, a list file, or .tar shards)."""

    min_side: int = Field(16, ge=1, description="Images with a shorter side below this are quarantined.")
    max_aspect_ratio: float = Field(4.0, ge=1.0, description="Long side / short side above this is quarantined.")
    max_pixels: int = Field(
        89_478_485, ge=1,
        description="Decompression-bomb guard: images with more pixels (read from the header, before decoding) "
        "are quarantined. Replaces Pillow's own limit.",
    )
    dedupe_exact: bool = Field(True, description="Drop byte-identical duplicates, keeping the first in input order.")
    dedupe_near: bool = Field(
        True, description="Drop near duplicates (perceptual hash and colour close), keeping the first in input order."
    )
    near_duplicate_bits: int = Field(
        6, ge=0, le=15, description="Largest Hamming distance between 64-bit perceptual hashes of near duplicates."
    )
    near_duplicate_colour_diff: float = Field(
        16.0, ge=0.0, le=255.0,
        description="Largest colour difference (0-255, worst cell of an 8x8 RGB thumbnail) of near duplicates: "
        "a recoloured object makes a different image.",
    )
    splits: list[str] = Field(
        default_factory=lambda: ["captioned", "unlabeled", "heldout"],
        description="Top-level folders of the input; images elsewhere go to default_split.",
    )
    default_split: str | None = Field(
        None, description="Split of images outside every split folder (e.g. unlabeled for a flat dump); "
        "null quarantines them as 'unknown_split'.",
    )
    caption_file: str = Field("captions.jsonl", description="Per-split JSONL of {file, caption}, if present.")
    caption_required_splits: list[str] = Field(
        default_factory=lambda: ["captioned"],
        description="Splits whose images without a caption are quarantined as 'missing_caption'.",
    )
    workers: int = Field(0, ge=0, description="Worker processes (0 = every available CPU core).")

    @model_validator(mode="after")
    def _check_default_split(self) -> CurateParams:
        if self.default_split is not None and self.default_split not in self.splits:
            raise ValueError(f"default_split {self.default_split!r} is not one of splits {self.splits}")
        return self


class DegradeParams(Section):
    """``degrade``: the understanding-input copy and the generation-target copy."""

    understanding_size: int = Field(32, ge=8, description="Side of the understanding copy (the encoder's input).")
    generation_size: int = Field(32, ge=8, description="Side of the generation target.")
    resize_mode: Literal["center_crop", "pad"] = Field(
        "center_crop", description="center_crop: shorter side to size then crop; pad: longer side to size then pad."
    )
    blur_sigma: float = Field(0.0, ge=0.0, description="Gaussian blur sigma (pixels) on the understanding copy.")
    downup_factor: float = Field(
        1.0, gt=0.0, le=1.0, description="Down-scale by this factor and back up (1.0 = off): removes detail."
    )
    workers: int = Field(
        0, ge=0, description="Worker processes (0 = every available CPU core); does not change the output."
    )


# -------------------------------------------------------------------------- model


class ModelParams(Section):
    """``model``: which UMM, where it comes from, and how it tokenises images.

    ``tiny`` and ``image_tokenizer`` belong to the adapter, so this schema
    imports no model code and leaves them to ``reca.models.model_params``,
    which checks them against the adapter (``reca check-params`` and every
    stage that loads the model go through it).
    """

    adapter: str = Field("janus_ar", description="Adapter registry name (see `reca adapters`).")
    pretrained: str | None = Field(
        None, description="Local directory or hub id to start from; null builds `tiny` from scratch."
    )
    revision: str | None = Field(None, description="Hub revision when `pretrained` is a hub id.")
    trust_remote_code: bool = Field(False, description="Allow model code from the checkpoint (off by default).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Dtype the weights are loaded in: auto = bfloat16 with an accelerator, float32 on "
        "the CPU (which has no fast bf16 training path). Weights are read straight into it.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="Attention kernel of the transformers models (flash_attention_2 needs the flash-attn "
        "package and a GPU; adapters with a bidirectional image block keep sdpa, which takes their mask).")
    image_tokenizer: str = Field(
        "patch_kmeans",
        description="How the generation branch represents images; the adapter lists what it accepts "
        "(janus_ar: patch_kmeans = a k-means patch codebook fitted in `sft` for the default world, "
        "janus_vq = the checkpoint's own VQ model).",
    )
    tiny: Any = Field(
        default_factory=dict,
        description="Size of the model built from scratch; the keys belong to the adapter (its `tiny_params`).",
    )

    @model_validator(mode="after")
    def _check_attention(self) -> ModelParams:
        import importlib.util

        if self.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise ValueError("attn_implementation: flash_attention_2 needs the flash-attn package "
                             "(pip install flash-attn on a CUDA machine); use sdpa")
        return self


# ----------------------------------------------------------------------- training


class LaunchParams(Section):
    """How many processes a stage runs on: `sft`, `train`, `post_sft`, `embed` and `evaluate` alike.

    With more than one process, or a hostfile, the stage's command relaunches
    itself under ``launcher`` (``reca.training.launch``); each process uses its
    own GPU (``cuda:<local rank>``) when there is one.
    """

    processes: int = Field(1, ge=1, description="Processes per node; > 1 relaunches the stage through `launcher`.")
    hostfile: str | None = Field(None, description="DeepSpeed hostfile for multi-node runs (implies launcher).")
    launcher: Literal["torchrun", "deepspeed"] = Field(
        "torchrun", description="How the stage starts several processes (a hostfile needs deepspeed)."
    )

    @model_validator(mode="after")
    def _check_launcher(self) -> LaunchParams:
        if self.hostfile is not None and self.launcher != "deepspeed":
            raise ValueError("hostfile needs launcher: deepspeed (torchrun here runs on one node)")
        return self


class OptimParams(LaunchParams):
    """Optimiser, schedule, DeepSpeed and launch settings shared by `sft` and `train`."""

    steps: int = Field(100, ge=1, description="Optimiser steps (budget in steps, not seconds).")
    batch_size: int = Field(32, ge=1, description="Samples per loss term per micro-batch, per process.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches per optimiser step; global batch = batch_size x this x processes."
    )
    lr: float = Field(1e-3, gt=0.0)
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="After linear warmup: cosine decay to min_lr_ratio, or constant."
    )
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Cosine floor as a fraction of lr.")
    warmup_steps: int = Field(20, ge=1, description="Linear warmup steps (DeepSpeed's schedulers need at least 1).")
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, ge=0.0, description="Global gradient-norm clip (0 = off).")
    activation_checkpointing: bool = Field(
        False, description="Recompute the trainable blocks' activations in backward instead of storing them "
        "(less memory, about a third more compute per step); every adapter's language model and block stacks.")
    zero_stage: Literal[0, 1, 2, 3] = Field(0, description="DeepSpeed ZeRO stage (configs/deepspeed/zero<N>.json).")
    deepspeed_config: str | None = Field(
        None, description="A DeepSpeed JSON to start from instead of configs/deepspeed/zero<N>.json."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 on GPU, fp32 on CPU (the CPU has no fast bf16 training path)."
    )
    seed: int = 0
    checkpoint_every: int = Field(200, ge=1, description="Steps between resumable checkpoints.")
    keep_checkpoints: int = Field(2, ge=1, description="How many resumable checkpoints to keep.")
    milestone_every: int = Field(
        0, ge=0, description="Steps between consolidated HF exports logged to MLflow (0 = final model only)."
    )
    log_every: int = Field(10, ge=1)
    max_nonfinite: int = Field(5, ge=1, description="Consecutive non-finite steps that stop the run.")
    cfg_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Probability of dropping the condition (CFG).")
    mlflow_fallback_local: bool = Field(
        False, description="If the MLflow server is unreachable, log to the local store instead of stopping."
    )

    @model_validator(mode="after")
    def _check_schedule(self) -> OptimParams:
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps})")
        return self


class SFTObjectiveParams(OptimParams):
    """Caption->image and image->caption training: what `sft` and `post_sft` share."""

    lambda_t2i: float = Field(1.0, ge=0.0)
    lambda_i2t: float = Field(1.0, ge=0.0)
    lambda_align: float = Field(
        0.0, ge=0.0,
        description="Contrastive term pulling each image's mean h_v towards its caption's mean word embedding "
        "(a from-scratch model's stand-in for a text-aligned encoder; janus_ar). 0 = off.",
    )
    align_at: Literal["word_embeddings", "condition_states"] = Field(
        "word_embeddings",
        description="Where lambda_align compares an image with its caption: word_embeddings (mean h_v against "
        "the caption's mean input embedding) or condition_states (the language model's state at "
        "<begin_of_image> after template + h_v against after the caption, every layer: where generation reads "
        "a condition).",
    )
    lambda_reca: float = Field(
        0.0, ge=0.0,
        description="Reconstruction of the captioned images from their own h_v (template + h_v, no caption) "
        "alongside SFT, so the starting model already knows the reconstruction condition that RecA trains, "
        "as pretrained UMMs know image-conditioned generation. 0 = off.",
    )
    freeze: list[str] = Field(
        default_factory=lambda: ["image_tokenizer"],
        description="Parts kept frozen (a model trained from scratch must train its understanding encoder).",
    )

    @property
    def trains(self) -> bool:
        """Whether the stage trains at all (otherwise it passes a model through)."""
        return True

    @model_validator(mode="after")
    def _check_sft_terms(self) -> SFTObjectiveParams:
        if self.trains and self.lambda_t2i + self.lambda_i2t == 0:
            raise ValueError("at least one of lambda_t2i, lambda_i2t must be positive")
        return self


class SFTParams(SFTObjectiveParams):
    """``sft``: caption->image and image->caption fine-tuning (from scratch on the default world)."""

    enabled: bool = Field(True, description="false: pass `model.pretrained` through unchanged.")

    @property
    def trains(self) -> bool:
        return self.enabled


class StartModelParams(SFTObjectiveParams):
    """``start_model``: how the published tiny starting model was trained (the frozen `start_model` stage).

    RecA post-trains a published model. On the embedded world that model is
    this project's own: built from scratch at ``model.tiny`` and trained by
    the SFT objective with these settings, once, then shipped in the DVC
    remote (``models/start``) the way a user downloads a checkpoint. `dvc
    repro` never retrains it; ``make start-model`` does.
    """


class PostSFTParams(SFTObjectiveParams):
    """``post_sft``: SFT after RecA, the RecA->SFT order of the paper's ablation (0 steps: none).

    With ``steps: 0`` (the default) the RecA model passes through unchanged as
    the final model; the ablation moves SFT steps from ``sft`` to here.
    """

    steps: int = Field(0, ge=0, description="SFT steps after RecA (0 = none: models/reca is the final model).")
    warmup_steps: int = Field(10, ge=1)

    @property
    def trains(self) -> bool:
        return self.steps > 0

    @model_validator(mode="after")
    def _check_schedule(self) -> PostSFTParams:
        if self.trains:
            OptimParams._check_schedule(self)
        return self


class TrainParams(OptimParams):
    """``train``: RecA post-training, L = λ_reca·L_reca + λ_i2t·L_i2t + λ_t2i·L_t2i."""

    lambda_reca: float = Field(1.0, ge=0.0)
    lambda_i2t: float = Field(1.0, ge=0.0)
    lambda_t2i: float = Field(0.0, ge=0.0)
    freeze: list[str] = Field(
        default_factory=lambda: ["understanding_encoder", "image_tokenizer"],
        description="Parts kept frozen (adapter part names).",
    )
    use_embedding_cache: bool = Field(
        True, description="Read h_v from the `embed` cache (requires the understanding encoder frozen)."
    )
    condition: Literal["understanding", "template_only", "generation_latents"] = Field(
        "understanding",
        description="template_only removes h_v from the condition (control arm); generation_latents puts the "
        "generation encoder's latents of the same degraded image in its place (the paper's VAE ablation).",
    )
    template_file: str | None = Field(None, description="One template per line; null = the built-in bank.")
    copy_warn_ratio: float = Field(
        0.2, ge=0.0, lt=1.0,
        description="Warn (token copying) when loss_reca falls below this fraction of the starting model's.",
    )
    registered_model: str | None = Field(
        "reca-shapeworld", description="MLflow registered-model name for the final model (null = do not register)."
    )

    @model_validator(mode="after")
    def _check_terms(self) -> TrainParams:
        if self.lambda_reca + self.lambda_i2t + self.lambda_t2i == 0:
            raise ValueError("at least one of lambda_reca, lambda_i2t, lambda_t2i must be positive")
        return self


class EmbedParams(LaunchParams):
    """``embed``: sharded, resumable cache of understanding-encoder features of the degraded images.

    With ``processes`` > 1 each process encodes whole shards (the shards still to
    compute, dealt out round-robin): the cache is byte for byte the one process's.
    """

    batch_size: int = Field(64, ge=1, description="Images per encoder forward pass.")
    splits: list[str] = Field(
        default_factory=lambda: ["unlabeled", "heldout"], description="Splits of the degraded manifest to cache."
    )
    shard_size: int = Field(
        1024, ge=1,
        description="Images per safetensors shard: the unit of resume, and of memory (one shard of features "
        "is held at a time).",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Storage dtype of the cached features (bfloat16 halves the disk of real encoders)."
    )


class EvaluateParams(LaunchParams):
    """``evaluate``: GenEval scores of generated images and reconstruction fidelity, model against model.

    With ``processes`` > 1 each process generates, scores and reconstructs whole
    batches (batch ``b`` on rank ``b mod world size``, its noise seeded by ``b``):
    the results are the one process's.
    """

    seed: int = Field(1234, description="Sampling seed: every model draws with the same noise per prompt.")
    classes: list[str] = Field(
        default_factory=lambda: list(SHAPES), min_length=2,
        description="Object classes of the GenEval prompts (the world's shapes; COCO names for real models).",
    )
    colours: list[str] = Field(
        default_factory=lambda: list(WORLD_COLOURS), min_length=2,
        description="Colours the colour prompts draw from (names from GenEval's ten).",
    )
    usual_colours: dict[str, str] = Field(
        default_factory=lambda: dict(USUAL_COLOUR),
        description="Each class's usual colour in the captioned split: colour scores are also split "
        "into usual / unusual pairs ({} = no split).",
    )
    prompt_seed: int = Field(43, description="Seed of GenEval's prompt recipe (GenEval's official set uses 43).")
    prompts_per_task: int = Field(32, ge=0, description="Draws per task before duplicates are removed (GenEval: 100).")
    max_count: int = Field(4, ge=2, le=9, description="Largest count of the counting task (GenEval: 4).")
    metadata_file: str | None = Field(
        None, description="A GenEval evaluation_metadata.jsonl (e.g. the official 553 prompts) used instead of "
        "the recipe; its classes must be names the detector knows.",
    )
    samples_per_prompt: int = Field(1, ge=1, description="Images per prompt (GenEval: 4).")
    detector: Literal["shapeworld", "mask2former"] = Field(
        "shapeworld", description="shapeworld: exact detector of the default world; mask2former: a transformers "
        "Mask2Former instance-segmentation checkpoint at detector_path.",
    )
    detector_path: str | None = Field(None, description="Local dir or hub id of the mask2former checkpoint.")
    colour_classifier: Literal["palette", "clip"] = Field(
        "palette", description="palette: nearest world colour of the masked pixels; clip: GenEval's CLIP "
        "zero-shot rule with the CLIP checkpoint at clip_path.",
    )
    clip_path: str | None = Field(None, description="Local dir or hub id of the CLIP checkpoint (colour_classifier clip).")
    threshold: float = Field(0.3, ge=0.0, le=1.0, description="Detection confidence threshold (GenEval: 0.3).")
    counting_threshold: float = Field(0.9, ge=0.0, le=1.0, description="Threshold for counting prompts (GenEval: 0.9).")
    max_objects: int = Field(16, ge=1, description="Most detections kept per class, most confident first (GenEval: 16).")
    max_overlap: float = Field(1.0, gt=0.0, le=1.0, description="NMS IoU per class; 1 = off (GenEval's default).")
    position_threshold: float = Field(0.1, ge=0.0, description="Relative-position margin (GenEval: 0.1).")
    n_reconstruction: int = Field(32, ge=0, description="Held-out images reconstructed from h_v.")
    guidance_scale: float = Field(1.0, ge=1.0, description="Classifier-free guidance (1 = off).")
    temperature: float = Field(1.0, gt=0.0)
    batch_size: int = Field(32, ge=1)
    grid_size: int = Field(16, ge=1, description="Prompts (and reconstructions) shown in each logged grid.")

    @model_validator(mode="after")
    def _check_evaluate(self) -> EvaluateParams:
        bad = sorted(set(self.colours) - set(GENEVAL_COLOURS))
        if bad:
            raise ValueError(f"colours {bad} are not GenEval colours; allowed: {', '.join(GENEVAL_COLOURS)}")
        if self.detector == "mask2former" and not self.detector_path:
            raise ValueError("detector mask2former needs detector_path (a local dir or hub id)")
        if self.colour_classifier == "clip" and not self.clip_path:
            raise ValueError("colour_classifier clip needs clip_path (a local dir or hub id)")
        return self


SECTIONS: dict[str, type[Section]] = {
    "curate": CurateParams,
    "degrade": DegradeParams,
    "model": ModelParams,
    "start_model": StartModelParams,
    "sft": SFTParams,
    "embed": EmbedParams,
    "train": TrainParams,
    "post_sft": PostSFTParams,
    "evaluate": EvaluateParams,
}


def _format_error(path: Path, section: str, err: ValidationError) -> ParamsError:
    return section_error(path, section, error_lines(section, SECTIONS[section], err))


def load_raw(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read ``params.yaml`` as a plain mapping, with errors that name the file."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found; run from the repository root or pass --params PATH")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections")
    return raw


def parse_section(section: str, raw: dict[str, Any] | None, path: str | Path = "params.yaml") -> Section:
    """Validate one section's mapping; ``None`` gives the defaults."""
    if section not in SECTIONS:
        raise ParamsError(f"unknown params section {section!r}; known: {', '.join(SECTIONS)}")
    try:
        return SECTIONS[section].model_validate(raw or {})
    except ValidationError as err:
        raise _format_error(Path(path), section, err) from None


def load_section(section: str, path: str | Path = "params.yaml") -> Any:
    """Load and validate one section of ``params.yaml``."""
    raw = load_raw(path)
    if section not in raw:
        raise ParamsError(f"{path}: missing section `{section}` (add it; defaults are documented in reca.params)")
    return parse_section(section, raw[section], path)


def validate_file(path: str | Path = "params.yaml") -> dict[str, Section]:
    """Validate every known section present in the file; unknown sections are errors."""
    raw = load_raw(path)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{path}: unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    return {name: parse_section(name, raw[name], path) for name in raw}


def flatten(section: BaseModel, prefix: str) -> dict[str, Any]:
    """Flatten a section into dotted keys, for MLflow params."""
    out: dict[str, Any] = {}
    for key, value in section.model_dump().items():
        _flatten_into(out, f"{prefix}.{key}", value)
    return out


def _flatten_into(out: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten_into(out, f"{key}.{k}", v)
    elif isinstance(value, (list, tuple)):
        out[key] = ",".join(str(v) for v in value)
    else:
        out[key] = value
