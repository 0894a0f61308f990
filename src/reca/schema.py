"""The base of every validated params schema, and errors that name the bad key.

``reca.params`` builds the sections of ``params.yaml`` on :class:`Section`;
each model adapter builds its own ``model.tiny`` schema on it too
(``reca.models.model_params`` checks that part of the ``model`` section
against the adapter). This module imports nothing of the package, so a schema
anywhere can use it without pulling in model, data or evaluation code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class ParamsError(ValueError):
    """A ``params.yaml`` section is missing, has an unknown key, or a bad value."""


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def error_lines(prefix: str, model: type[BaseModel], err: ValidationError) -> list[str]:
    """One line per error of ``err``, each naming the dotted key under ``prefix`` and what is allowed."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in (prefix, *e["loc"]))
        if e["type"] == "extra_forbidden":
            allowed = allowed_keys(model, e["loc"][:-1])
            lines.append(f"{key}: unknown key; allowed keys here: {', '.join(allowed)}")
        elif e["type"] == "value_error" and not e["loc"]:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(msg if msg.startswith(f"{prefix}.") else f"{prefix}: {msg}")
        else:
            lines.append(f"{key}: {e['msg'].removeprefix('Value error, ')} (got {e.get('input')!r})")
    return lines


def allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys of ``model`` (or of the nested section at ``loc``), sorted."""
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            break
    return sorted(model.model_fields)


def section_error(path: str | Path, section: str, lines: list[str]) -> ParamsError:
    """The error for a bad ``section`` of the params file at ``path``, one indented line per problem."""
    return ParamsError("\n".join([f"{Path(path)}: invalid `{section}` section:", *(f"  {line}" for line in lines)]))
