"""Presets: partial params files for real runs, merged into ``params.yaml``.

A preset (``configs/presets/*.yaml``) holds only the keys a recipe changes
(model, resolutions, steps, learning rate, launcher...). Applying it merges
those keys into ``params.yaml`` in place, keeping the file's comments and
order (ruamel round-trip), and validates the result before writing, so a
preset can never leave an invalid params file behind.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from reca.fileio import write_text
from reca.params import ParamsError, parse_section


def _merge(target: Any, overlay: dict[str, Any], path: str) -> list[str]:
    changed = []
    for key, value in overlay.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            changed += _merge(target[key], value, where)
        else:
            if target.get(key) != value:
                changed.append(where)
            target[key] = value
    return changed


def apply_preset(preset: str | Path, params_path: str | Path = "params.yaml") -> list[str]:
    """Merge ``preset`` into ``params_path``; return the dotted keys that changed."""
    yaml = YAML()
    yaml.preserve_quotes = True
    preset, params_path = Path(preset), Path(params_path)
    for path in (preset, params_path):
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found")
    overlay = yaml.load(preset.read_text(encoding="utf-8")) or {}
    document = yaml.load(params_path.read_text(encoding="utf-8"))
    changed = _merge(document, overlay, "")
    for section in overlay:
        try:
            parsed = parse_section(section, document.get(section), params_path)
            if section == "model":  # `model.tiny` belongs to the adapter
                from reca.models.model_params import resolve_model_params

                resolve_model_params(parsed, params_path)
        except ParamsError as err:
            raise ParamsError(f"preset {preset} would make params invalid:\n{err}") from None
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    write_text(params_path, buffer.getvalue())
    return changed
