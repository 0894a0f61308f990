"""Memory per GPU of a DeepSpeed training run, planned from the model's shape before renting the GPUs.

Where it sits: ``benchmarks/bench_real_size.py`` counts a published
configuration's parameters on the meta device, asks this module how the bytes
of one training step split over ``world_size`` GPUs under each ZeRO stage,
and checks the plan against a run it measures at a depth that fits its
machine. Pure arithmetic on counts and shapes: nothing here imports torch.

Model states, bytes per trainable parameter before ZeRO divides them (the
ZeRO paper's accounting, Rajbhandari et al. 2020, section 3.1, plus the
copies DeepSpeed and torch's AdamW make on top of it):

==========  =======  =================================  ============================  ===========
precision   weights  gradients                          optimizer states              step temps
==========  =======  =================================  ============================  ===========
bf16        2        2 + 4 (the flat fp32 copy the      4 (fp32 master) + 8 (Adam)    4
                     optimizer steps on)
fp32        4        4 (+ 4: the flat copy, ZeRO >= 1)  8 (Adam) (+ 4: ZeRO >= 1
                                                        keeps its own fp32 partition)
==========  =======  =================================  ============================  ===========

ZeRO-1 divides the optimizer states, the fp32 gradient copy and the step
temporaries by the world size, ZeRO-2 also the gradients, ZeRO-3 also the
weights, and ZeRO-3 gathers the full weights of its largest layer while it
runs. The step temporaries are torch's foreach AdamW's ``sqrt(v)``, one fp32
tensor the size of the optimizer's partition. Frozen parameters hold weights
only, never partitioned (the trainer keeps them out of ZeRO-3:
:class:`reca.training.deepspeed_setup.FrozenOutsideZero3`).

Activations live through the backward pass and the step temporaries only
after it, so the planned peak is ``weights + gradients + optimizer states +
max(activations, step temporaries)``: an upper bound for both phases, since
the fp32 gradient copy exists only during the step.

Activations are what a Llama-style decoder layer (pre-RMSNorm, attention,
SwiGLU MLP, transformers' implementation) saves for the backward pass, per
token, with ``e`` bytes per element (2 in bf16, 4 in fp32):

* each of the two RMSNorms: its fp32 input (4h), its normalised output
  (e·h) and the scaled output the next matmul reads (e·h);
* attention: q, k, v after rotary embedding (3·e·h), the attention output
  and its re-laid-out copy that ``o_proj`` reads (2·e·h); SDPA keeps no
  ``heads x seq x seq`` matrix (an eager implementation would add
  ``(4 + e)·heads·seq`` per token: fp32 probabilities and their cast);
* SwiGLU: gate, up, silu(gate) and their product (4·e·i).

That is ``8h + 9·e·h + 4·e·i`` bytes per token per layer. With activation
checkpointing a layer keeps only its input (``e·h``), and one layer at a time
is recomputed in full during the backward pass. An output head that ends in a
cross-entropy keeps fp32 log-probabilities (4 bytes per logit) until the
backward pass; the largest head also needs its logits and their gradients
(``4 + 2e`` more per logit) while it runs.

The plan leaves out the framework's own memory (CUDA context, allocator
fragmentation, communication buckets), temporary buffers of frozen forward
passes and everything below a layer's granularity: the benchmark prints the
measured peak beside the plan so the gap is visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

#: bytes per element of the weights, gradients and activations of each precision
ELEMENT_BYTES = {"bf16": 2, "fp32": 4}
ZERO_STAGES = (0, 1, 2, 3)
GIB = 2**30


@dataclass(frozen=True)
class DecoderStack:
    """Llama-style decoder layers that a training step backpropagates through.

    Attributes:
        layers: Number of decoder layers.
        hidden: Hidden size ``h``.
        intermediate: SwiGLU intermediate size ``i``.
        heads: Attention heads (only the eager-attention term reads it).
        sequences: Per sample, the length of every forward pass through the
            stack in one step (RecA: the reconstruction pass and the
            captioning pass).
    """

    layers: int
    hidden: int
    intermediate: int
    heads: int
    sequences: tuple[int, ...]

    @property
    def tokens(self) -> int:
        """Tokens per sample through the stack in one step."""
        return sum(self.sequences)


@dataclass(frozen=True)
class OutputHead:
    """A projection to ``outputs`` classes followed by a cross-entropy over ``tokens`` positions per sample."""

    name: str
    tokens: int
    outputs: int


@dataclass(frozen=True)
class TrainingShape:
    """What the plan needs to know about one model and one step.

    Attributes:
        trainable: Parameters the optimiser updates.
        frozen: Parameters that only run forward.
        largest_layer: Parameters of the largest module ZeRO-3 gathers at once
            (the token embedding of a large vocabulary, usually).
        stack: The decoder the step backpropagates through.
        heads: The output heads whose cross-entropies the step computes.
    """

    trainable: int
    frozen: int
    largest_layer: int
    stack: DecoderStack
    heads: tuple[OutputHead, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per GPU of each kind; ``total`` is the planned peak (see the module docstring)."""

    weights: float
    gradients: float
    optimizer: float
    temporaries: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + max(self.activations, self.temporaries)

    def fits(self, capacity_bytes: float) -> bool:
        """Whether the planned peak is within ``capacity_bytes``."""
        return self.total <= capacity_bytes


def _check(precision: str, zero_stage: int, world_size: int) -> int:
    if precision not in ELEMENT_BYTES:
        raise ValueError(f"precision {precision!r}; expected one of {', '.join(ELEMENT_BYTES)}")
    if zero_stage not in ZERO_STAGES:
        raise ValueError(f"zero_stage {zero_stage!r}; expected one of {', '.join(map(str, ZERO_STAGES))}")
    if world_size < 1:
        raise ValueError(f"world_size {world_size!r}; expected at least 1")
    return ELEMENT_BYTES[precision]


def model_state_bytes(trainable: int, frozen: int, *, precision: str, zero_stage: int, world_size: int,
                      largest_layer: int = 0) -> dict[str, float]:
    """Bytes per GPU of weights, gradients, optimizer states and step temporaries (the module docstring's table).

    Args:
        trainable: Parameters the optimiser updates.
        frozen: Parameters that only run forward (weights only, never partitioned).
        precision: ``bf16`` (DeepSpeed mixed precision: fp32 master and Adam) or ``fp32``.
        zero_stage: 0 to 3.
        world_size: Data-parallel GPUs the ZeRO partitions are spread over.
        largest_layer: Parameters ZeRO-3 gathers at once on top of its partition.

    Returns:
        ``{"weights", "gradients", "optimizer", "temporaries"}`` in bytes.

    Raises:
        ValueError: For an unknown precision or stage, or a world size below 1.
    """
    e = _check(precision, zero_stage, world_size)
    n = world_size
    weights_div = n if zero_stage >= 3 else 1
    grads_div = n if zero_stage >= 2 else 1
    states_div = n if zero_stage >= 1 else 1
    # Plain fp32 without ZeRO is the one case where the optimizer steps on the weights and gradients themselves.
    copies = 4 if precision == "bf16" or zero_stage >= 1 else 0
    weights = trainable * e / weights_div + frozen * e
    if zero_stage >= 3:
        weights += largest_layer * e
    return {
        "weights": weights,
        "gradients": trainable * (e / grads_div + copies / states_div),
        "optimizer": trainable * (copies + 8) / states_div,
        "temporaries": trainable * 4 / states_div,
    }


def layer_activation_bytes(hidden: int, intermediate: int, *, precision: str) -> int:
    """Bytes one decoder layer saves for its backward pass, per token: ``8h + 9·e·h + 4·e·i``."""
    e = _check(precision, 0, 1)
    return 8 * hidden + 9 * e * hidden + 4 * e * intermediate


def activation_bytes(stack: DecoderStack, heads: Sequence[OutputHead], *, micro_batch: int, precision: str,
                     checkpointing: bool = False, eager_attention: bool = False) -> float:
    """Bytes of activations alive at the peak of one step's backward pass (per GPU, ``micro_batch`` samples).

    Args:
        stack: The decoder layers the step backpropagates through.
        heads: Output heads followed by a cross-entropy.
        micro_batch: Samples per GPU per forward pass.
        precision: ``bf16`` or ``fp32`` activations.
        checkpointing: Keep only each layer's input and recompute one layer at a time.
        eager_attention: Add the ``heads x seq x seq`` probabilities an eager attention keeps.
    """
    e = _check(precision, 0, 1)
    per_token = layer_activation_bytes(stack.hidden, stack.intermediate, precision=precision)

    def full_layer(sequences: Sequence[int]) -> float:
        scores = sum((4 + e) * stack.heads * s * s for s in sequences) if eager_attention else 0
        return per_token * sum(sequences) + scores

    if checkpointing:
        layers = stack.layers * e * stack.hidden * stack.tokens + full_layer([max(stack.sequences, default=0)])
    else:
        layers = stack.layers * full_layer(stack.sequences)
    logits = [head.tokens * head.outputs for head in heads]
    head_bytes = 4 * sum(logits) + (4 + 2 * e) * max(logits, default=0)
    return micro_batch * (layers + head_bytes)


def plan_memory(shape: TrainingShape, *, precision: str, zero_stage: int, world_size: int, micro_batch: int,
                checkpointing: bool = False, eager_attention: bool = False) -> MemoryPlan:
    """The memory plan of one GPU for ``shape`` trained under the given precision, stage and batch.

    Raises:
        ValueError: For an unknown precision or stage, a world size or micro-batch below 1.
    """
    if micro_batch < 1:
        raise ValueError(f"micro_batch {micro_batch!r}; expected at least 1")
    states = model_state_bytes(shape.trainable, shape.frozen, precision=precision, zero_stage=zero_stage,
                               world_size=world_size, largest_layer=shape.largest_layer)
    activations = activation_bytes(shape.stack, shape.heads, micro_batch=micro_batch, precision=precision,
                                   checkpointing=checkpointing, eager_attention=eager_attention)
    return MemoryPlan(activations=activations, **states)


def max_micro_batch(shape: TrainingShape, capacity_bytes: float, *, precision: str, zero_stage: int,
                    world_size: int, checkpointing: bool = False, eager_attention: bool = False) -> int:
    """The largest micro-batch whose planned peak fits in ``capacity_bytes`` (0 if not even one sample does)."""
    one = plan_memory(shape, precision=precision, zero_stage=zero_stage, world_size=world_size, micro_batch=1,
                      checkpointing=checkpointing, eager_attention=eager_attention)
    room = capacity_bytes - (one.weights + one.gradients + one.optimizer)
    if room < one.temporaries or room < one.activations:
        return 0
    return int(room // one.activations)
