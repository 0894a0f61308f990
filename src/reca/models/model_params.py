"""The ``model`` section of ``params.yaml`` checked against its adapter: ``model.tiny`` and ``model.image_tokenizer``.

``reca.params`` validates the section's own keys and imports no model code,
so it keeps ``tiny`` as the raw mapping. The keys of ``tiny`` (the adapter's
``tiny_params`` schema) and the image tokenizers an adapter accepts belong to
the adapter: they are checked here, next to the registry. ``reca
check-params``, the stage commands and :func:`reca.models.loading.initial_model`
go through :func:`resolve_model_params`, so a bad key stops them with a message
that names it, e.g. ``model.tiny.hidden_sise: unknown key; allowed keys here:
...``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ValidationError

from reca.models import registry
from reca.params import ModelParams, load_section, validate_file
from reca.schema import Section, error_lines, section_error


def _problems(model: ModelParams) -> tuple[BaseModel | None, list[str]]:
    """(the validated ``tiny``, or None; the lines naming what is wrong)."""
    try:
        adapter = registry.get(model.adapter)
    except KeyError as err:
        return None, ["model: " + str(err).strip("'\"")]
    accepted = getattr(adapter, "image_tokenizers", None)
    if accepted and model.image_tokenizer not in accepted:
        return None, [f"model.image_tokenizer: {model.image_tokenizer!r} is not one {model.adapter} accepts; "
                      f"allowed: {', '.join(accepted)}"]
    tiny = model.tiny
    if isinstance(tiny, BaseModel):
        tiny = tiny.model_dump()
    elif tiny is None:
        tiny = {}
    elif not isinstance(tiny, Mapping):
        return None, [f"model.tiny: must be a mapping of the adapter's sizes (got {tiny!r})"]
    schema = adapter.tiny_params
    try:
        return schema.model_validate(dict(tiny)), []
    except ValidationError as err:
        return None, ["; ".join(error_lines("model.tiny", schema, err))]


def resolve_model_params(model: ModelParams, path: str | Path = "params.yaml") -> ModelParams:
    """``model`` with ``tiny`` validated by its adapter's ``tiny_params`` (defaults filled in).

    Args:
        model: The ``model`` section as ``reca.params`` parsed it (``tiny`` raw or already resolved).
        path: The params file it came from, named in the error.

    Returns:
        A copy whose ``tiny`` is the adapter's schema instance; ``model`` itself is not changed.

    Raises:
        ParamsError: the adapter is unknown, does not accept ``image_tokenizer``, or ``tiny`` has an
            unknown key or a bad value; the message names the key and what is allowed.
    """
    tiny, problems = _problems(model)
    if problems:
        raise section_error(path, "model", problems)
    # model_copy: plain assignment would validate `tiny` again as a raw value (validate_assignment).
    return model.model_copy(update={"tiny": tiny})


def load_model_params(path: str | Path = "params.yaml") -> ModelParams:
    """Load the ``model`` section of ``path`` and resolve it against its adapter."""
    return resolve_model_params(load_section("model", path), path)


def validate_params_file(path: str | Path = "params.yaml") -> dict[str, Section]:
    """:func:`reca.params.validate_file`, with the ``model`` section also checked against its adapter."""
    sections = validate_file(path)
    if "model" in sections:
        sections["model"] = resolve_model_params(sections["model"], path)
    return sections
