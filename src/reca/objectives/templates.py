"""Text templates that condition the Reconstruction Alignment (RecA) objective.

RecA post-trains a unified multimodal model on unlabeled images.  For each
image the model receives its own *understanding* embeddings of that image
together with a short text instruction -- a "reconstruction template" such as
"Describe the image in detail." -- and is trained to regenerate the image.
The embeddings carry the content; the template only tells the model which
task it is being asked to perform.

Why a bank of templates, drawn at random per sample?

* If every sample used one fixed instruction, the model could key on that
  exact token sequence and learn a shortcut tied to it, instead of learning
  to turn understanding embeddings into pixels for any reasonable request.
  Drawing a fresh template for every sample prevents the condition from
  collapsing onto a single string.
* A diverse set of phrasings behaves like the varied prompts of real
  instruction-tuning data: describe, depict, recount and reproduce requests,
  statements and questions, short and long.  That keeps the text pathway
  robust and keeps the reconstruction task close to the distribution of
  prompts the model sees elsewhere.
* Templates never mention specific content (colours, shapes, objects), so
  the only source of information about *what* to generate is the image
  embedding itself.

The bank is built from a hand-written core of full sentences plus a few
small phrase lists combined systematically; every combination is a complete,
grammatical English sentence.  ``CAPTION_INSTRUCTIONS`` is a separate, small
set of prompts for the image-to-text (captioning) loss.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

__all__ = [
    "CAPTION_INSTRUCTIONS",
    "RECONSTRUCTION_TEMPLATES",
    "TemplateBank",
    "load_templates",
]

# ---------------------------------------------------------------------------
# Hand-written core: complete sentences, not produced by any combination.
# ---------------------------------------------------------------------------
_CORE: tuple[str, ...] = (
    "Describe the image in detail.",
    "Give a thorough description of this picture.",
    "What is shown in this image?",
    "Tell me everything you can see in this photo.",
    "Describe this scene as if to someone who cannot see it.",
    "Explain what is happening in this picture.",
    "Write a detailed account of the contents of this image.",
    "Recount what this photo shows, from the foreground to the background.",
    "Paint a picture in words of what appears here.",
    "Describe every visible element of this image.",
    "Summarize the visual content of this picture.",
    "What does this image depict?",
    "Walk me through this scene piece by piece.",
    "Provide a faithful description of the image.",
    "Reproduce this image as closely as you can.",
    "Recreate the picture you were shown.",
    "Redraw this scene exactly as it appears.",
    "Generate the same image again.",
    "Render this picture once more without changing anything.",
    "Describe the layout and composition of this image.",
    "How would you describe this photo to a friend?",
    "What can you see in this picture?",
    "Point out the main elements of this image and describe them.",
    "Describe the setting, the lighting, and the overall mood of this image.",
    "Give an objective description of what this image contains.",
    "Describe this image without leaving anything out.",
    "List what is visible in this picture and how it is arranged.",
    "Describe where each element sits within the frame.",
    "Explain the composition of this photograph.",
    "Narrate what this image shows.",
    "Describe this image as an art critic might.",
    "Describe this picture the way a museum guide would.",
    "Offer a careful, literal description of this photo.",
    "Produce a vivid description of this scene.",
    "Depict in words what this image contains.",
    "What is going on in this photo?",
    "Describe the foreground and the background of this picture.",
    "Describe the scene shown here in plain language.",
    "Capture this image in a few precise sentences.",
    "Convey the full content of this picture in writing.",
    "Tell me what this photograph contains, in as much detail as possible.",
    "Reconstruct the scene from this image.",
    "Draw this picture again from memory.",
    "Make an exact copy of this image.",
    "Create an image identical to this one.",
    "Show me this picture again.",
    "Re-create this scene with all of its details.",
    "Describe the image so precisely that it could be redrawn.",
    "Describe the picture so that someone could recreate it.",
    "What details can you pick out in this image?",
    "Could you describe this image for me?",
    "Please describe what you see.",
    "Please give a detailed description of the photo.",
    "Characterize the overall appearance of this image.",
    "Describe the atmosphere of this scene.",
    "Describe the textures and lighting visible in this picture.",
    "Describe the spatial arrangement of everything in the image.",
    "Explain, in detail, what this picture portrays.",
    "Give me a rundown of what appears in this image.",
    "Break this image down into its parts and describe each one.",
    "Describe this photo from left to right.",
    "Describe this picture from top to bottom.",
    "What is the subject of this image, and what surrounds it?",
    "Describe the main subject of this photo and its surroundings.",
    "Provide a short but complete description of this image.",
    "In a few sentences, describe this picture.",
    "Using plain words, explain what this image shows.",
    "Imagine describing this image over the phone; what would you say?",
    "Describe what this image looks like.",
    "How would you describe the contents of this picture?",
    "Give a precise visual description of this scene.",
    "Explain what someone would see when looking at this image.",
    "Write a paragraph describing this photograph.",
    "Describe the image accurately and concisely.",
    "Share a detailed description of this picture.",
    "Detail everything that appears in this photo.",
    "Tell me about this image.",
    "What do you see here?",
    "Look at this image and describe it.",
    "Study this picture closely and describe what it shows.",
    "Examine the photo and report every detail.",
    "Take a close look at this image and describe it thoroughly.",
    "Describe the mood this picture conveys and what creates it.",
    "What is the first thing you notice in this image, and what else is there?",
    "Give a step-by-step description of this scene.",
)

# ---------------------------------------------------------------------------
# Small phrase lists, combined systematically below.  Each family only pairs
# pieces that fit together, so every result reads as a natural sentence.
# ---------------------------------------------------------------------------
_OBJECTS: tuple[str, ...] = (
    "the image",
    "this image",
    "the picture",
    "this picture",
    "the photo",
    "this photo",
    "the photograph",
    "this scene",
)
_FEW_OBJECTS: tuple[str, ...] = ("this image", "the picture", "this photo", "the scene")
_SUBJECTS: tuple[str, ...] = ("the image", "this picture", "this photo", "the photograph")

_DESCRIBE_QUALIFIERS: tuple[str, ...] = (
    "",
    " in detail",
    " in great detail",
    " thoroughly",
    " carefully",
    " accurately",
    " precisely",
    " in full",
    " as precisely as you can",
    " in a few sentences",
    " in plain language",
    " objectively",
    " vividly",
    " clearly and completely",
)

_REQUEST_VERBS: tuple[str, ...] = ("Give", "Provide", "Write")
_REQUEST_ADJECTIVES: tuple[str, ...] = (
    "a detailed",
    "a thorough",
    "a complete",
    "an accurate",
    "a concise",
    "a faithful",
)
_REQUEST_NOUNS: tuple[str, ...] = ("description", "account")

_WHAT_LEADS: tuple[str, ...] = (
    "Tell me",
    "Explain",
    "Describe",
    "Summarize",
    "Walk me through",
    "Put into words",
    "Report",
)
_WHAT_VERBS: tuple[str, ...] = ("shows", "contains", "depicts")

_WHAT_QUESTIONS: tuple[str, ...] = ("What does", "What exactly does")
_IN_QUESTIONS: tuple[str, ...] = (
    "What can you see in",
    "What is happening in",
    "What appears in",
    "What is visible in",
    "What is shown in",
)
_POLITE_LEADS: tuple[str, ...] = ("Can you", "Could you", "Would you")
_POLITE_QUALIFIERS: tuple[str, ...] = ("", " in detail", " for me")

_REPRODUCE_VERBS: tuple[str, ...] = (
    "Reproduce",
    "Recreate",
    "Redraw",
    "Regenerate",
    "Reconstruct",
    "Re-render",
)
_REPRODUCE_QUALIFIERS: tuple[str, ...] = (
    "",
    " exactly",
    " faithfully",
    " as closely as possible",
    " with every detail intact",
    " without changing anything",
    " in full detail",
)
_COPY_VERBS: tuple[str, ...] = ("Generate", "Create", "Produce", "Make")
_COPY_NOUNS: tuple[str, ...] = ("an exact copy", "a faithful copy", "a close replica")


def _normalise(text: str) -> str:
    """Case-insensitive, whitespace-normalised key used for duplicate checks."""
    return " ".join(text.split()).lower()


def _composed() -> Iterator[str]:
    for obj, qual in product(_OBJECTS, _DESCRIBE_QUALIFIERS):
        yield f"Describe {obj}{qual}."
    for verb, adj, noun, obj in product(
        _REQUEST_VERBS, _REQUEST_ADJECTIVES, _REQUEST_NOUNS, _FEW_OBJECTS
    ):
        yield f"{verb} {adj} {noun} of {obj}."
    for lead, subj, verb in product(_WHAT_LEADS, _SUBJECTS, _WHAT_VERBS):
        yield f"{lead} what {subj} {verb}."
    for lead, subj, verb in product(_WHAT_QUESTIONS, _SUBJECTS, _WHAT_VERBS):
        yield f"{lead} {subj} {verb.removesuffix('s')}?"
    for lead, obj in product(_IN_QUESTIONS, _OBJECTS):
        yield f"{lead} {obj}?"
    for lead, obj, qual in product(_POLITE_LEADS, _FEW_OBJECTS, _POLITE_QUALIFIERS):
        yield f"{lead} describe {obj}{qual}?"
    for verb, obj, qual in product(_REPRODUCE_VERBS, _FEW_OBJECTS, _REPRODUCE_QUALIFIERS):
        yield f"{verb} {obj}{qual}."
    for verb, noun, obj in product(_COPY_VERBS, _COPY_NOUNS, _FEW_OBJECTS):
        yield f"{verb} {noun} of {obj}."


def _unique(templates: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    out: list[str] = []
    for template in templates:
        key = _normalise(template)
        if key not in seen:
            seen.add(key)
            out.append(template)
    return tuple(out)


RECONSTRUCTION_TEMPLATES: tuple[str, ...] = _unique((*_CORE, *_composed()))

CAPTION_INSTRUCTIONS: tuple[str, ...] = (
    "Write a short caption for this image.",
    "Caption this picture in one sentence.",
    "Give a brief caption for the photo.",
    "Describe this image in a single sentence.",
    "Write a one-line caption for this picture.",
    "Provide a concise caption for this image.",
    "What is a good caption for this photo?",
    "Summarize this image in a few words.",
    "Write a brief description of this picture.",
    "Suggest a caption for this image.",
    "Give this photo a short, descriptive caption.",
    "Caption the image briefly.",
)

_TOKEN_RE = re.compile(r"[.,?!;:']|[^\s.,?!;:']+")


class TemplateBank:
    """An immutable, validated collection of text templates.

    Templates are stored whitespace-normalised (runs of whitespace collapse
    to one space, ends are stripped).  Construction raises ``ValueError`` if
    the bank is empty, if an entry is blank or not a string, or if two
    entries are equal after lower-casing and whitespace normalisation.
    """

    def __init__(self, templates: Sequence[str] = RECONSTRUCTION_TEMPLATES) -> None:
        if isinstance(templates, str):
            raise TypeError("TemplateBank expects a sequence of strings, not one string")
        cleaned: list[str] = []
        first_seen: dict[str, str] = {}
        for index, template in enumerate(templates):
            if not isinstance(template, str):
                raise ValueError(
                    f"template at index {index} is not a string: {template!r}"
                )
            text = " ".join(template.split())
            if not text:
                raise ValueError(f"template at index {index} is empty: {template!r}")
            key = text.lower()
            if key in first_seen:
                raise ValueError(
                    f"duplicate template {template!r} (same as {first_seen[key]!r} "
                    "after lower-casing and whitespace normalisation)"
                )
            first_seen[key] = template
            cleaned.append(text)
        if not cleaned:
            raise ValueError("a TemplateBank needs at least one template")
        self._templates: tuple[str, ...] = tuple(cleaned)

    @property
    def templates(self) -> tuple[str, ...]:
        return self._templates

    def sample(self, rng: random.Random | np.random.Generator) -> str:
        """Draw one template uniformly at random using ``rng``."""
        n = len(self._templates)
        if isinstance(rng, random.Random):
            index = rng.randrange(n)
        elif hasattr(rng, "integers"):
            index = int(rng.integers(n))
        else:
            raise TypeError(
                "rng must be a random.Random or a numpy.random.Generator, "
                f"got {type(rng).__name__}"
            )
        return self._templates[index]

    def words(self) -> set[str]:
        """Lower-case vocabulary of all templates.

        Text is split on whitespace, and the punctuation marks
        ``. , ? ! ; : '`` are split off as tokens of their own (so
        "image." gives "image" and ".").
        """
        vocab: set[str] = set()
        for template in self._templates:
            vocab.update(_TOKEN_RE.findall(template.lower()))
        return vocab

    def __len__(self) -> int:
        return len(self._templates)

    def __iter__(self) -> Iterator[str]:
        return iter(self._templates)

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str) and " ".join(item.split()) in self._templates

    def __getitem__(self, index: int) -> str:
        return self._templates[index]

    def __repr__(self) -> str:
        return f"TemplateBank({len(self._templates)} templates)"


def load_templates(path: str | Path | None = None) -> TemplateBank:
    """Load a template bank.

    ``None`` returns the built-in bank (``RECONSTRUCTION_TEMPLATES``).
    Otherwise ``path`` is a UTF-8 text file with one template per line;
    blank lines and lines whose first non-space character is ``#`` are
    ignored.
    """
    if path is None:
        return TemplateBank(RECONSTRUCTION_TEMPLATES)
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"template file not found: {str(file)!r}; expected a UTF-8 text file "
            "with one template per line (blank lines and '#' comments are ignored)"
        )
    lines = file.read_text(encoding="utf-8").splitlines()
    templates = [
        line.strip()
        for line in lines
        if line.strip() and not line.strip().startswith("#")
    ]
    return TemplateBank(templates)
