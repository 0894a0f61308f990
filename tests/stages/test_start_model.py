"""The published starting model: trained from scratch by `reca start-model`, with its lineage, and handed on."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
import yaml
from safetensors.torch import load_file

from reca.models.loading import load_model_dir
from reca.models.model_params import resolve_model_params
from reca.params import ModelParams, SFTParams, StartModelParams, load_section
from reca.stage_files import START_MODEL_LINEAGE
from reca.stages import sft
from reca.training.runs import degraded_digest
from reca_fixtures import REPO
from reca_fixtures.models import TINY, one_torch_thread
from reca_fixtures.tracking import FakeTracker
from stages.test_post_sft import _captioned_dir

_single_thread = pytest.fixture(autouse=True)(one_torch_thread)


@pytest.fixture
def start_model(tmp_path):
    """`reca start-model` on a tiny world: model.pretrained set (as in params.yaml) and ignored."""
    degraded = _captioned_dir(tmp_path / "degraded")
    model = ModelParams(adapter="janus_ar", pretrained=str(tmp_path / "models" / "start"),
                        tiny={**TINY, "kmeans_iters": 2})
    params = StartModelParams(steps=2, batch_size=2, warmup_steps=1, log_every=1, checkpoint_every=2, seed=7,
                              lambda_align=1.0)
    sft.run_start_model(params, model, degraded, tmp_path / "models" / "start", FakeTracker(), root=tmp_path)
    return tmp_path / "models" / "start", model, params, degraded


def test_the_start_model_is_built_from_scratch_and_records_its_lineage(start_model):
    out, model, params, degraded = start_model
    lineage = json.loads((out / START_MODEL_LINEAGE).read_text())
    assert lineage["params"]["start_model"] == params.model_dump(mode="json")
    assert lineage["params"]["model"]["tiny"] == resolve_model_params(model).tiny.model_dump(mode="json")
    assert "pretrained" not in lineage["params"]["model"]
    assert lineage["seed"] == 7
    assert lineage["data"]["degraded"] == degraded_digest(degraded)
    assert len(lineage["git_commit"]) in (40, len("unknown"))
    # what the default `model` section (pretrained: models/start) loads
    adapter = load_model_dir(out, model)
    assert adapter.name == "janus_ar" and adapter.model.config.text_config.hidden_size == TINY["hidden_size"]


def test_sft_disabled_hands_the_start_model_on_with_its_lineage(start_model, tmp_path):
    out, model, _, degraded = start_model
    sft.run(SFTParams(enabled=False), model, degraded, tmp_path / "models" / "sft", FakeTracker(), root=tmp_path)
    for name in (START_MODEL_LINEAGE, "model.safetensors"):
        assert (tmp_path / "models" / "sft" / name).read_bytes() == (out / name).read_bytes()


def test_the_default_params_post_train_the_published_start_model_pulled_by_make_run():
    assert load_section("model").pretrained == "models/start"
    assert load_section("sft").enabled is False
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["start_model"]["frozen"] is True and stages["start_model"]["outs"] == ["models/start"]
    assert "models/start" in stages["sft"]["deps"]
    # `make run` pulls it before `dvc repro`, which would stop at a frozen stage without its output
    recipe = subprocess.run(["make", "-n", "run"], cwd=REPO, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"}).stdout
    pull, repro = recipe.index("dvc pull data.dvc start_model"), recipe.index("dvc repro")
    assert pull < repro


def test_the_published_start_model_in_the_remote_matches_its_lineage():
    """dvc.lock's record of models/start is what the offline remote holds, made from the data it names."""
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]["start_model"]
    (out,) = lock["outs"]
    md5 = out["md5"].removesuffix(".dir")
    remote = REPO / "dvcstore" / "files" / "md5" / md5[:2] / (md5[2:] + ".dir")
    assert remote.exists(), f"{remote}: models/start is not in the offline remote; run `make start-model`"
    listing = {entry["relpath"]: entry["md5"] for entry in json.loads(remote.read_text())}
    assert {"model.safetensors", START_MODEL_LINEAGE, "reca_adapter.json"} <= set(listing)
    lineage_blob = REPO / "dvcstore" / "files" / "md5" / listing[START_MODEL_LINEAGE][:2] / listing[START_MODEL_LINEAGE][2:]
    lineage = json.loads(lineage_blob.read_text())
    assert lineage["params"]["start_model"] == load_section("start_model").model_dump(mode="json")
    data = yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]["md5"]
    assert lineage["data"]["raw"] == data
    weights = REPO / "dvcstore" / "files" / "md5" / listing["model.safetensors"][:2] / listing["model.safetensors"][2:]
    assert all(torch.isfinite(t).all() for t in load_file(str(weights)).values())


def test_a_missing_start_model_says_how_to_pull_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here either way: fail at once
    monkeypatch.chdir(tmp_path)  # a checkout where `dvc pull start_model` has not run
    model = ModelParams(adapter="janus_ar", pretrained="models/start")
    with pytest.raises(FileNotFoundError, match=r"'models/start' is neither a local directory.*dvc pull start_model"):
        sft.run(SFTParams(enabled=False), model, _captioned_dir(tmp_path / "degraded"), tmp_path / "sft",
                FakeTracker(), root=tmp_path)
