"""The words of the embedded default world and of GenEval's colour rule, in one dependency-free place.

The params schema takes its ``evaluate`` defaults from here, the world
(``reca.shapeworld``) draws and renders these shapes and colours, and
GenEval's prompt rules (``reca.evaluation.geneval_prompts``) use its colour
list: each reads the same names without importing the others.
"""

from __future__ import annotations

#: GenEval's colour list (the colour classifier chooses among exactly these)
GENEVAL_COLOURS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
)

#: the shapes of the default world
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")

#: the six colours of both default worlds (names from GenEval's ten)
WORLD_COLOURS: tuple[str, ...] = GENEVAL_COLOURS[:6]

# The colour bias of the captioned split (orange is nobody's usual colour).
USUAL_COLOUR: dict[str, str] = {
    "circle": "red",
    "square": "blue",
    "triangle": "yellow",
    "diamond": "green",
    "cross": "purple",
}
