"""Do a text prompt and the h_v of a matching image put the LLM in the same place?

RecA teaches the generator to draw what ``h_v`` shows. That helps text-to-image
only if the language model represents "a photo of a yellow square" where it
represents ``template + h_v`` of a yellow square: otherwise what the generator
learns from ``h_v`` has no road to the text prompts GenEval scores. This script
measures that road on the ShapeWorld default (``janus_ar`` adapter), for every
(shape, colour) pair of the world:

* the text state: the LLM's hidden state at ``<begin_of_image>`` (the state that
  predicts the first image token) after the GenEval ``colors`` prompt
  "a photo of a {colour} {shape}";
* the image state: the same state after the reconstruction condition
  (the first built-in reconstruction template + ``h_v``) of ``--renders`` random
  renders of that pair, degraded as ``params.yaml``'s ``degrade`` section says,
  averaged.

Both sets are centred on their own mean (the two modalities sit apart by a
constant offset, which says nothing about what varies with the content), then
it reports, per layer:

* ``retrieval_pair`` / ``_colour`` / ``_shape``: % of text states whose nearest
  image state (cosine) has the same pair / colour / shape (chance 1/pairs,
  1/colours, 1/shapes);
* ``probe_image``: % of held-out image states whose colour a least-squares
  linear read-out fitted on image states gets right (does h_v carry colour?);
* ``probe_text``: % of text states whose colour a read-out fitted on the text
  states of the other shapes gets right (leave one shape out: do text states
  carry colour at all?);
* ``probe_transfer``: % of text states whose colour the image read-out gets
  right (does the colour direction that h_v uses also hold for text?).

High ``probe_image`` and ``probe_text`` with ``probe_transfer`` near chance
means both conditions carry colour, in unrelated directions.

Usage::

    python scripts/condition_alignment.py models/sft runs/arms/b_reca_sft/seed0/model

Each argument is a model directory; ``--params`` gives the world's vocabulary
(``evaluate.classes``, ``evaluate.colours``) and the degradation.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml

METRICS = ("retrieval_pair", "retrieval_colour", "retrieval_shape", "probe_image", "probe_text", "probe_transfer")


def _render_batch(shape: str, colour: str, n: int, rng: np.random.Generator, size: int, degrade_params: dict
                  ) -> torch.Tensor:
    """``n`` random single-object renders of the default world, as the ``degrade`` stage prepares them."""
    from reca.data.transforms import degrade, resize, to_tensor
    from reca.shapeworld.world import Scene, WorldSpec, place_objects, render

    spec = WorldSpec()
    images = []
    for _ in range(n):
        image = resize(render(Scene(place_objects(rng, spec, [shape], [colour]), spec.image_size)), size,
                       str(degrade_params.get("resize_mode", "center_crop")))
        image = degrade(image, float(degrade_params.get("blur_sigma", 0.0)),
                        float(degrade_params.get("downup_factor", 1.0)))
        images.append(to_tensor(image))
    return torch.stack(images)


@torch.no_grad()
def _boi_states(adapter, condition) -> torch.Tensor:
    """The adapter's condition states, layer first: (layers, batch, dim)."""
    return adapter.condition_states(condition).float().transpose(0, 1)


def states(adapter, pairs: Sequence[tuple[str, str]], renders: int, seed: int, degrade_params: dict
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(text states (L, P, D), mean image states (L, P, D), per-render image states (L, P, R, D)), L = LLM layers."""
    from reca.evaluation.geneval_prompts import colors_prompt
    from reca.models.base import Condition
    from reca.stages.evaluate import EVAL_TEMPLATE

    rng = np.random.default_rng(seed)
    text = _boi_states(adapter, Condition(texts=[colors_prompt(s, c)["prompt"] for s, c in pairs]))
    per_render = []
    for shape, colour in pairs:
        pixels = _render_batch(shape, colour, renders, rng, adapter.understanding_size, degrade_params)
        h_v = adapter.embed_images(pixels.to(next(adapter.parameters()).dtype))
        per_render.append(_boi_states(adapter, Condition(texts=[EVAL_TEMPLATE] * renders, image_embeddings=h_v)))
    images = torch.stack(per_render, dim=1)  # (L, P, R, D)
    return text, images.mean(dim=2), images


def _probe(train_x: torch.Tensor, train_y: torch.Tensor, classes: int, ridge: float = 1e-2) -> torch.Tensor:
    """Least-squares linear read-out (with bias) onto one-hot labels: weights (D + 1, classes)."""
    x = torch.cat([train_x, torch.ones(len(train_x), 1)], dim=1)
    y = torch.nn.functional.one_hot(train_y, classes).float()
    return torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1]), x.T @ y)


def _apply(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (torch.cat([x, torch.ones(len(x), 1)], dim=1) @ weights).argmax(dim=1)


def alignment(text: torch.Tensor, image_mean: torch.Tensor, images: torch.Tensor,
              pairs: Sequence[tuple[str, str]], colours: Sequence[str]) -> list[dict[str, float]]:
    """The metrics of the module docstring, one dict per layer (in %)."""
    shape_of = [s for s, _ in pairs]
    colour_index = torch.tensor([colours.index(c) for _, c in pairs])
    rows = []
    for layer in range(text.shape[0]):
        t = text[layer] - text[layer].mean(dim=0)
        centre = image_mean[layer].mean(dim=0)
        m = image_mean[layer] - centre
        nearest = (torch.nn.functional.normalize(t, dim=1) @ torch.nn.functional.normalize(m, dim=1).T).argmax(1)
        row = {
            "retrieval_pair": 100.0 * float((nearest == torch.arange(len(pairs))).float().mean()),
            "retrieval_colour": 100.0 * float((colour_index[nearest] == colour_index).float().mean()),
            "retrieval_shape": 100.0 * sum(shape_of[j] == shape_of[i] for i, j in enumerate(nearest.tolist()))
            / len(pairs),
        }
        # Fit the colour read-out on half the renders of every pair, test on the other half and on text.
        per = images[layer] - centre  # (P, R, D)
        half = per.shape[1] // 2
        labels = colour_index.repeat_interleave(half)
        weights = _probe(per[:, :half].reshape(-1, per.shape[-1]), labels, len(colours))
        held = per[:, half: 2 * half].reshape(-1, per.shape[-1])
        row["probe_image"] = 100.0 * float((_apply(weights, held) == labels).float().mean())
        row["probe_transfer"] = 100.0 * float((_apply(weights, t) == colour_index).float().mean())
        right = 0
        for shape in dict.fromkeys(shape_of):
            out = torch.tensor([s == shape for s in shape_of])
            text_weights = _probe(t[~out], colour_index[~out], len(colours))
            right += int((_apply(text_weights, t[out]) == colour_index[out]).sum())
        row["probe_text"] = 100.0 * right / len(pairs)
        rows.append(row)
    return rows


def markdown(results: dict[str, list[dict[str, float]]], chance: dict[str, float]) -> str:
    lines = ["| model | layer | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    lines.append("| chance | – | " + " | ".join(f"{chance[m]:.1f}" for m in METRICS) + " |")
    for name, rows in results.items():
        for layer, row in enumerate(rows, start=1):
            lines.append(f"| {name} | {layer} | " + " | ".join(f"{row[m]:.1f}" for m in METRICS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="model directories (janus_ar adapter)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params file: evaluate.classes/colours and the degrade section (default: params.yaml)")
    parser.add_argument("--renders", type=int, default=16, help="random renders per (shape, colour) (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the renders (default: 0)")
    opts = parser.parse_args(argv)
    if opts.renders < 2:
        parser.error("--renders must be at least 2 (half fit the colour read-out, half test it)")

    from reca.models import registry

    params = yaml.safe_load(opts.params.read_text(encoding="utf-8"))
    shapes, colours = list(params["evaluate"]["classes"]), list(params["evaluate"]["colours"])
    pairs = [(s, c) for s in shapes for c in colours]
    torch.manual_seed(opts.seed)
    results = {}
    for model_dir in opts.models:
        adapter = registry.load(model_dir).eval()
        text, image_mean, images = states(adapter, pairs, opts.renders, opts.seed, params.get("degrade", {}))
        results[str(model_dir)] = alignment(text, image_mean, images, pairs, colours)
    chance = {"retrieval_pair": 100 / len(pairs), "retrieval_colour": 100 / len(colours),
              "retrieval_shape": 100 / len(shapes), "probe_image": 100 / len(colours), "probe_text": 100 / len(colours),
              "probe_transfer": 100 / len(colours)}
    print(markdown(results, chance))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
