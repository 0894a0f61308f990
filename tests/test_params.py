"""Tests for the typed params.yaml schema (reca.params), and the `model` section checked against its adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reca.models.model_params import load_model_params, resolve_model_params, validate_params_file
from reca.params import (
    SECTIONS,
    CurateParams,
    ModelParams,
    ParamsError,
    TrainParams,
    flatten,
    load_section,
    parse_section,
    validate_file,
)

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_defaults_of_every_section_validate(section: str) -> None:
    parsed = parse_section(section, None)
    assert isinstance(parsed, SECTIONS[section])
    # The defaults survive a dump -> validate round trip unchanged.
    assert SECTIONS[section].model_validate(parsed.model_dump()) == parsed


def test_repo_params_yaml_validates_every_section() -> None:
    parsed = validate_params_file(REPO_PARAMS)
    assert set(parsed) == set(SECTIONS)
    assert parsed["train"].zero_stage == 0  # one CPU process
    assert parsed["model"].pretrained == "models/start" and parsed["start_model"].steps == 3000
    assert parsed["degrade"].downup_factor == 0.5
    assert parsed["model"].tiny.codebook_size == 1024


def test_unknown_key_names_dotted_key_and_lists_allowed_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, {"train": {"lrr": 1}})
    with pytest.raises(ParamsError) as info:
        validate_file(path)
    msg = str(info.value)
    assert "train.lrr" in msg
    assert "unknown key" in msg
    allowed = msg.split("allowed keys here:", 1)[1]
    assert "lr" in [k.strip() for k in allowed.split(",")]
    assert "warmup_steps" in allowed
    assert str(path) in msg


def test_nested_unknown_key_lists_keys_of_the_nested_section(tmp_path: Path) -> None:
    path = _write(tmp_path, {"model": {"tiny": {"hidden_sise": 64}}})
    validate_file(path)  # the schema keeps `tiny` raw: its keys belong to the adapter
    with pytest.raises(ParamsError) as info:
        validate_params_file(path)
    msg = str(info.value)
    assert "model.tiny.hidden_sise" in msg
    allowed = [k.strip() for k in msg.split("allowed keys here:", 1)[1].split(",")]
    # The allowed keys are those of `tiny`, not of `model`.
    assert "hidden_size" in allowed
    assert "codebook_size" in allowed
    assert "adapter" not in allowed


@pytest.mark.parametrize(
    ("section", "raw", "needle"),
    [
        ("train", {"lr": -1.0}, "train.lr"),
        ("sft", {"lr": 0.0}, "sft.lr"),
        ("train", {"zero_stage": 5}, "train.zero_stage"),
        ("train", {"steps": 10, "warmup_steps": 10}, "warmup_steps"),
        ("sft", {"steps": 5, "warmup_steps": 7}, "warmup_steps"),
        ("degrade", {"downup_factor": 1.5}, "degrade.downup_factor"),
        ("degrade", {"resize_mode": "stretch"}, "degrade.resize_mode"),
        ("curate", {"max_aspect_ratio": 0.5}, "curate.max_aspect_ratio"),
        ("model", {"tiny": {"hidden_size": 130, "num_heads": 4}}, "num_heads"),
    ],
)
def test_bad_value_names_the_key(tmp_path: Path, section: str, raw: dict, needle: str) -> None:
    path = _write(tmp_path, {section: raw})
    with pytest.raises(ParamsError) as info:
        validate_params_file(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_bad_value_reports_the_offending_input(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"train\.zero_stage.*got 5"):
        validate_file(_write(tmp_path, {"train": {"zero_stage": 5}}))


def test_warmup_below_steps_is_accepted() -> None:
    parsed = parse_section("train", {"steps": 10, "warmup_steps": 9})
    assert isinstance(parsed, TrainParams)
    assert parsed.warmup_steps == 9


def test_missing_section_error_names_section_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"curate": {"min_side": 8}})
    assert load_section("curate", path).min_side == 8
    with pytest.raises(ParamsError) as info:
        load_section("train", path)
    msg = str(info.value)
    assert "`train`" in msg
    assert str(path) in msg


def test_missing_file_is_a_params_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ParamsError, match="nope.yaml"):
        load_section("train", path)


def test_unknown_top_level_section_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, {"curate": {}, "trian": {"lr": 1e-3}})
    with pytest.raises(ParamsError) as info:
        validate_file(path)
    msg = str(info.value)
    assert "trian" in msg
    assert "train" in msg.split("known:", 1)[1]


def test_unknown_section_name_in_parse_section_is_rejected() -> None:
    with pytest.raises(ParamsError, match="unknown params section 'bogus'"):
        parse_section("bogus", {})


def test_assignment_is_validated() -> None:
    params = CurateParams()
    with pytest.raises(ValueError):
        params.min_side = 0


def test_flatten_gives_dotted_keys_and_joins_lists() -> None:
    flat = flatten(TrainParams(), "train")
    assert flat["train.lr"] == 1e-3
    assert flat["train.freeze"] == "understanding_encoder,image_tokenizer"
    assert flat["train.betas"] == "0.9,0.95"
    assert flat["train.template_file"] is None
    assert all(k.startswith("train.") for k in flat)
    assert all(not isinstance(v, (list, tuple, dict)) for v in flat.values())


def test_flatten_recurses_into_nested_sections() -> None:
    flat = flatten(resolve_model_params(ModelParams()), "model")
    assert flat["model.tiny.hidden_size"] == 128
    assert flat["model.tiny.token_patch_size"] == 4
    assert flat["model.adapter"] == "janus_ar"
    assert "model.tiny" not in flat
    flat_curate = flatten(CurateParams(splits=["a", "b"]), "curate")
    assert flat_curate["curate.splits"] == "a,b"


def test_model_section_errors_name_the_key_the_adapter_rejects(tmp_path: Path) -> None:
    path = _write(tmp_path, {"model": {"adapter": "nope"}})
    with pytest.raises(ParamsError, match=r"invalid `model` section:\n  model: unknown adapter 'nope'; available: "):
        load_model_params(path)
    path = _write(tmp_path, {"model": {"image_tokenizer": "pixels"}})
    with pytest.raises(ParamsError, match=r"model\.image_tokenizer: 'pixels' is not one janus_ar accepts; allowed: "):
        load_model_params(path)
    path = _write(tmp_path, {"model": {"tiny": {"hidden_sise": 64}}})
    with pytest.raises(ParamsError, match=r"params\.yaml: invalid `model` section:\n"
                       r"  model\.tiny\.hidden_sise: unknown key; allowed keys here: "):
        load_model_params(path)


def test_resolving_fills_the_adapters_defaults_and_leaves_the_section_alone() -> None:
    raw = ModelParams(tiny={"hidden_size": 64})
    resolved = resolve_model_params(raw)
    assert raw.tiny == {"hidden_size": 64}
    assert resolved.tiny.hidden_size == 64
    assert resolved.tiny.codebook_size == type(resolved.tiny)().codebook_size  # the adapter's default
    assert resolve_model_params(resolved) == resolved  # resolving twice changes nothing


@pytest.mark.parametrize("section", ["embed", "evaluate", "train"])
def test_embed_and_evaluate_launch_like_train(section: str) -> None:
    from reca.params import parse_section

    assert parse_section(section, {}).processes == 1
    assert parse_section(section, {"processes": 4, "launcher": "deepspeed"}).processes == 4
    with pytest.raises(ParamsError, match=rf"{section}\.processes"):
        parse_section(section, {"processes": 0})
    with pytest.raises(ParamsError, match="hostfile needs launcher: deepspeed"):
        parse_section(section, {"hostfile": "configs/hostfile"})
