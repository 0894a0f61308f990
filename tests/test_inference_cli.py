"""`reca generate` and `reca edit` on a tiny trained model, from a directory or the MLflow registry."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from reca.cli import build_parser, main
from reca_fixtures.models import build_tiny_adapter, tiny_pixels
from reca_fixtures.tracking import isolated_mlflow_store


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "reca"
    build_tiny_adapter().save_pretrained(path)
    return path


def _run(argv: list[str], capsys) -> tuple[int, dict | str]:
    try:
        code = main(argv)
    except SystemExit as stop:
        code = int(stop.code)
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else captured.err)


def _source_png(path, seed: int):
    from reca.data.transforms import to_pil

    to_pil(tiny_pixels(1, size=24, seed=seed)[0]).save(path)
    return path


def test_generate_writes_seeded_images_at_the_models_resolution(model_dir, tmp_path, capsys):
    argv = ["generate", "a red circle", "--model", str(model_dir), "-n", "2", "--seed", "3"]
    code, out = _run([*argv, "--out", str(tmp_path / "g.png")], capsys)
    assert code == 0
    assert out["images"] == [str(tmp_path / "g-0.png"), str(tmp_path / "g-1.png")]
    first = [Image.open(p).tobytes() for p in out["images"]]
    assert all(Image.open(p).size == (16, 16) for p in out["images"])
    assert first[0] != first[1]  # two samples, not one image twice
    assert out["unknown_words"] == []
    _, again = _run([*argv, "--out", str(tmp_path / "h.png")], capsys)
    assert [Image.open(p).tobytes() for p in again["images"]] == first


def test_edit_writes_the_edit_and_names_words_the_model_does_not_know(model_dir, tmp_path, capsys):
    source = _source_png(tmp_path / "in.png", 0)
    code, out = _run(["edit", str(source), "make the circle red", "--model", str(model_dir),
                      "--out", str(tmp_path / "e.png"), "--scale", "4"], capsys)
    assert code == 0
    assert Image.open(out["images"][0]).size == (64, 64)  # 16 px upscaled 4x for viewing
    assert out["unknown_words"] == ["make"] and out["source"] == str(source)


def test_edit_conditions_on_the_decoded_source_image(model_dir, tmp_path, monkeypatch):
    from reca.data.transforms import resize, to_tensor
    from reca.inference import edit_images, load_model, load_source_image

    adapter = load_model(model_dir, device="cpu")
    source = load_source_image(_source_png(tmp_path / "in.png", 1), adapter.understanding_size)
    # The 24 px file, resized and centre-cropped to the encoder's 16 px input as `degrade` does.
    expected = to_tensor(resize(Image.open(tmp_path / "in.png").convert("RGB"), 16, "center_crop"))
    assert source.shape == (3, 16, 16) and (source - expected).abs().max() < 1e-6
    seen = {}

    def recording_edit(pixels, instructions, **kwargs):
        seen["pixels"], seen["instructions"] = pixels, instructions
        return pixels.new_zeros(len(instructions), 3, 16, 16)

    monkeypatch.setattr(adapter, "edit", recording_edit)
    images = edit_images(adapter, source, "make it red", n=3)
    assert len(images) == 3 and seen["instructions"] == ["make it red"] * 3
    assert all((seen["pixels"][i] == source).all() for i in range(3))


def test_edit_refuses_a_file_that_is_not_an_image(model_dir, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    code, err = _run(["edit", str(bad), "make it red", "--model", str(model_dir), "--out",
                      str(tmp_path / "e.png")], capsys)
    assert code == 2 and f"{bad}: cannot use this image" in err and "not_an_image" in err
    assert not (tmp_path / "e.png").exists()


def test_a_missing_model_directory_says_how_to_make_one(tmp_path, capsys):
    code, err = _run(["generate", "a red circle", "--model", str(tmp_path / "nope")], capsys)
    assert code == 2 and "dvc repro train" in err and "models:/NAME/VERSION" in err


def test_generate_loads_a_registered_model_version(model_dir, tmp_path, monkeypatch, capsys):
    client, _ = isolated_mlflow_store(tmp_path, monkeypatch)
    experiment = client.create_experiment("reca", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.create_registered_model("reca-tiny")
    client.create_model_version("reca-tiny", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)

    client.set_registered_model_alias("reca-tiny", "champion", "1")

    args = ["a red circle", "--seed", "5"]
    _, from_dir = _run(["generate", *args, "--model", str(model_dir), "--out", str(tmp_path / "d.png")], capsys)
    expected = Image.open(from_dir["images"][0]).tobytes()
    for i, uri in enumerate(["models:/reca-tiny/1", "models:/reca-tiny@champion", f"runs:/{run.info.run_id}/model"]):
        code, out = _run(["generate", *args, "--model", uri, "--out", str(tmp_path / f"r{i}.png")], capsys)
        assert code == 0, out
        assert Image.open(out["images"][0]).tobytes() == expected, uri


@pytest.mark.parametrize("command", ["generate", "edit", "report"])
def test_every_option_of_the_inference_and_report_commands_is_documented(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # noqa: SLF001 - no public listing
    assert sub.description
    for action in sub._actions:  # noqa: SLF001
        assert action.help, f"reca {command}: {action.option_strings or action.dest} has no help"
