"""Presets merge into params.yaml, keep its comments, and are validated."""

from __future__ import annotations

import shutil

import pytest
import yaml

from reca.models.model_params import validate_params_file
from reca.params import ParamsError
from reca.presets import apply_preset
from reca_fixtures import REPO


@pytest.mark.parametrize("preset", sorted((REPO / "configs" / "presets").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_preset_gives_valid_params(tmp_path, preset):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    changed = apply_preset(preset, params)
    assert changed  # every preset changes something (the dotted keys whose value differs)
    sections = validate_params_file(params)  # model.tiny and image_tokenizer against the preset's adapter too
    assert sections["train"].steps == yaml.safe_load(preset.read_text())["train"]["steps"]
    assert "# reca pipeline parameters" in params.read_text()  # comments survive


def test_invalid_preset_is_refused_and_leaves_params_untouched(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  zero_stage: 7\n")
    with pytest.raises(ParamsError, match="zero_stage"):
        apply_preset(bad, params)
    assert params.read_text() == before
