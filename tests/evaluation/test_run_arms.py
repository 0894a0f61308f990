"""Tests for scripts/run_arms.py: arm definitions, tables, and (slow) a shrunken end-to-end sweep."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reca.params import ParamsError, parse_section
from reca_fixtures import REPO

spec = importlib.util.spec_from_file_location("run_arms", REPO / "scripts" / "run_arms.py")
run_arms = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_arms)

BASE = yaml.safe_load((REPO / "params.yaml").read_text())


def test_each_arm_is_a_valid_train_section_differing_only_where_it_should() -> None:
    sections = {arm: run_arms.arm_params(BASE, arm, seed=7, steps=50)["train"] for arm in run_arms.ARMS}
    for train in sections.values():
        parsed = parse_section("train", train)
        assert parsed.seed == 7 and parsed.steps == 50 and parsed.registered_model is None
        assert parsed.lr == BASE["train"]["lr"] and parsed.freeze == BASE["train"]["freeze"]
    more_sft, reca, template, no_t2i = (sections[a] for a in run_arms.ARMS)
    assert (more_sft["lambda_reca"], more_sft["lambda_i2t"], more_sft["lambda_t2i"]) == (0.0, 1.0, 1.0)
    assert {k: v for k, v in template.items() if k != "condition"} == {k: v for k, v in reca.items() if k != "condition"}
    assert (reca["condition"], template["condition"]) == ("understanding", "template_only")
    assert no_t2i["lambda_t2i"] == 0.0 and no_t2i["lambda_reca"] == 1.0
    assert run_arms.arm_params(BASE, "b_reca_sft", seed=0)["evaluate"] == BASE["evaluate"]


def test_lambda_reca_scales_only_the_arms_with_a_reca_term() -> None:
    weights = {arm: run_arms.arm_params(BASE, arm, seed=0, lambda_reca=0.25)["train"]["lambda_reca"]
               for arm in run_arms.ARMS}
    assert weights == {"a_more_sft": 0.0, "b_reca_sft": 0.25, "c_template_only": 0.25, "d_reca_no_t2i": 0.25}
    with pytest.raises(ParamsError, match="lambda_reca"):
        run_arms.arm_params(BASE, "b_reca_sft", seed=0, lambda_reca=-1.0)


def test_invalid_overrides_fail_before_anything_runs() -> None:
    with pytest.raises(ParamsError, match="warmup_steps"):
        run_arms.arm_params(BASE, "a_more_sft", seed=0, steps=1)


def test_tables_per_arm_seed_and_metric(tmp_path: Path) -> None:
    results = {
        ("sft", None): {"overall": 0.2, "colors": 0.5, "colors_images": 10},
        ("b_reca_sft", 0): {"overall": 0.3, "colors": 0.6, "recon_psnr": 20.0},
        ("b_reca_sft", 1): {"overall": 0.5, "colors": 0.8, "recon_psnr": 22.0},
    }
    content = run_arms.write_tables(tmp_path, results)
    csv_lines = (tmp_path / "arms.csv").read_text().splitlines()
    assert csv_lines[0] == "arm,seed,metric,value"
    assert "b_reca_sft,1,colors,0.8" in csv_lines and "sft,,overall,0.2" in csv_lines
    assert not any("colors_images" in line for line in csv_lines)
    overall = next(r for r in content["summary"] if r["arm"] == "b_reca_sft" and r["metric"] == "overall")
    assert overall["mean"] == pytest.approx(0.4) and overall["std"] == pytest.approx(0.1414, abs=1e-3)
    table = (tmp_path / "arms.md").read_text()
    assert "| b_reca_sft | 2 | 40.0 ± 14.1 | 70.0 ± 14.1 | 21.0 ± 1.4 |" in table
    # ... and every run on its own row.
    assert "| b_reca_sft | 1 | 50.0 | 80.0 | 22.00 |" in table and "| sft | – | 20.0 | 50.0 | – |" in table
    assert json.loads((tmp_path / "arms.json").read_text())["runs"] == content["runs"]


def test_evaluate_overrides_are_validated_and_validation_draws_differ_from_reported_ones() -> None:
    before = BASE["evaluate"]["guidance_scale"]
    guided = run_arms.with_evaluate(BASE, guidance_scale=before + 0.5)
    assert guided["evaluate"] == {**BASE["evaluate"], "guidance_scale": before + 0.5}
    assert guided["train"] == BASE["train"]
    assert BASE["evaluate"]["guidance_scale"] == before  # the base is not modified
    with pytest.raises(ParamsError, match="guidance_scale"):
        run_arms.with_evaluate(BASE, guidance_scale=0.5)
    draws = run_arms.validation_draws(BASE)
    assert draws == {"prompt_seed": BASE["evaluate"]["prompt_seed"] + 1, "seed": BASE["evaluate"]["seed"] + 1}


def test_best_scale_is_the_best_mean_over_seeds_and_the_smaller_on_a_tie() -> None:
    assert run_arms.best_scale({1.0: [0.5, 0.5], 1.5: [0.7, 0.4], 2.0: [0.6, 0.6]}) == 2.0
    assert run_arms.best_scale({2.0: [0.6, 0.4], 1.25: [0.5, 0.5], 3.0: [0.1, 0.2]}) == 1.25


def fake_reca(calls: list[tuple[str, str, float, int, int]]):
    """A stand-in for the `reca` subprocesses: train writes a model, evaluate scores a made-up curve.

    The control's ``overall`` peaks at guidance 1.5 on validation draws and at 2 on the reported ones,
    so a selection that read the reported draws would pick the wrong scale.
    """
    def run(args, workdir, env, log):
        if args[0] == "train":
            out = Path(args[args.index("--output") + 1])
            out.mkdir(parents=True)
            (out / "model.safetensors").write_bytes(b"")
            return
        evaluate = yaml.safe_load(Path(args[args.index("--params") + 1]).read_text())["evaluate"]
        name = args[args.index("--model") + 1].split("=")[0]
        g, validation = evaluate["guidance_scale"], evaluate["prompt_seed"] != BASE["evaluate"]["prompt_seed"]
        calls.append((name, "validation" if validation else "reported", g, evaluate["prompt_seed"], evaluate["seed"]))
        peak = 1.5 if validation else 2.0
        overall = 0.5 - (g - peak) ** 2 + (0.1 if name == "b_reca_sft" else 0.0)
        Path(args[args.index("--metrics") + 1]).write_text(json.dumps({name: {"overall": overall, "colors": 0.3}}))
    return run


def test_guidance_is_selected_on_the_control_then_every_run_is_scored_at_it(tmp_path: Path, monkeypatch) -> None:
    calls: list = []
    monkeypatch.setattr(run_arms, "_reca", fake_reca(calls))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(BASE))
    out = tmp_path / "arms"
    argv = ["--params", str(params), "--seeds", "0", "1", "--arms", "a_more_sft", "b_reca_sft", "--out", str(out),
            "--workdir", str(tmp_path), "--select-guidance", "1", "1.5", "2"]
    assert run_arms.main(argv) == 0
    validation = [c for c in calls if c[1] == "validation"]
    prompt_seed, seed = BASE["evaluate"]["prompt_seed"] + 1, BASE["evaluate"]["seed"] + 1
    assert sorted(validation) == sorted(("a_more_sft", "validation", g, prompt_seed, seed)
                                        for g in (1.0, 1.5, 2.0) for _ in (0, 1))
    reported = [c for c in calls if c[1] == "reported"]
    assert sorted(reported) == sorted((arm, "reported", 1.5, BASE["evaluate"]["prompt_seed"], BASE["evaluate"]["seed"])
                                      for arm in ("sft", "a_more_sft", "a_more_sft", "b_reca_sft", "b_reca_sft"))
    assert json.loads((out / "guidance_selection.json").read_text())["best"] == 1.5
    assert "| 1.5 | 50.0 ± 0.0 | 50.0 / 50.0 |" in (out / "guidance_selection.md").read_text()
    assert (out / "b_reca_sft" / "seed1" / "guidance1.5" / "metrics.json").exists()
    table = (out / "guidance1.5" / "arms.md").read_text()
    assert "| b_reca_sft | 2 | 35.0 ± 0.0 |" in table and "| sft | 1 | 25.0 ± 0.0 |" in table
    assert (out / "sft" / "guidance1.5" / "metrics.json").exists()
    assert not (out / "arms.md").exists()  # the unguided table is not overwritten

    calls.clear()  # a rerun finds every evaluation done and trains nothing
    assert run_arms.main(argv) == 0 and calls == []


def write_record(path: Path, rows: list[tuple[str, str, str, float]]) -> Path:
    path.write_text("arm,seed,metric,value\n" + "".join(f"{a},{s},{m},{v}\n" for a, s, m, v in rows))
    return path


def test_similarity_scores_show_two_decimals_and_accuracies_percent() -> None:
    results = {("b_reca_sft", 0): {"overall": 0.5, "recon_ssim": 0.371, "recon_hv_cosine": 0.8},
               ("b_reca_sft", 1): {"overall": 0.6, "recon_ssim": 0.391, "recon_hv_cosine": 0.84}}
    _, table = run_arms.summary_table(results)
    assert "| b_reca_sft | 2 | 55.0 ± 7.1 | 0.38 ± 0.01 | 0.82 ± 0.03 |" in table
    assert "| overall | recon_hv_cosine |" in run_arms.summary_table(results, ["overall", "recon_hv_cosine"])[1]
    assert "| b_reca_sft | 1 | 60.0 | 0.39 | 0.84 |" in run_arms.per_run_table(results)


def test_summarise_writes_the_results_tables_again_from_a_per_seed_record(tmp_path: Path) -> None:
    record = write_record(tmp_path / "exp_seeds.csv", [
        ("sft", "", "overall", 0.2), ("b_reca_sft (λ 0.5)", "0", "overall", 0.3),
        ("b_reca_sft (λ 0.5)", "0", "colors", 0.6), ("b_reca_sft (λ 0.5)", "1", "overall", 0.5),
        ("b_reca_sft (λ 0.5)", "1", "colors", 0.8)])
    before = record.read_text()
    assert run_arms.main(["--summarise", str(record)]) == 0  # trains nothing: no params, no MLflow
    assert record.read_text() == before  # the record is written back unchanged
    summary = list(csvrows(tmp_path / "exp.csv"))
    assert [(r["arm"], r["metric"]) for r in summary][:2] == [("sft", "overall"), ("b_reca_sft (λ 0.5)", "overall")]
    assert summary[1] == {"arm": "b_reca_sft (λ 0.5)", "metric": "overall", "mean": "0.4",
                          "std": str(run_arms.mean_std([0.3, 0.5])[1]), "n": "2"}
    page = (tmp_path / "exp.md").read_text()
    assert page.startswith("# Results `exp`") and "exp_seeds.csv" in page.split("\n\n")[1]
    assert "| b_reca_sft (λ 0.5) | 2 | 40.0 ± 14.1 | 70.0 ± 14.1 |" in page
    assert "| sft | – | 20.0 | – |" in page and "| b_reca_sft (λ 0.5) | 1 | 50.0 | 80.0 |" in page
    # elsewhere, under another name
    assert run_arms.main(["--summarise", str(record), "--results-dir", str(tmp_path / "docs"),
                          "--results-name", "other"]) == 0
    assert (tmp_path / "docs" / "other_seeds.csv").read_text() == before
    assert (tmp_path / "docs" / "other.md").read_text() == page.replace("exp", "other")


def test_summarise_needs_a_name_for_a_run_folders_record(tmp_path: Path, capsys) -> None:
    record = write_record(tmp_path / "arms.csv", [("a_more_sft", "0", "overall", 0.5)])
    with pytest.raises(SystemExit):
        run_arms.main(["--summarise", str(record)])
    assert "--results-name" in capsys.readouterr().err


def test_records_merge_and_a_run_may_repeat_only_with_the_same_values(tmp_path: Path) -> None:
    first = write_record(tmp_path / "l1_seeds.csv", [("a_more_sft", "0", "overall", 0.5),
                                                     ("b_reca_sft (λ 1)", "0", "overall", 0.55)])
    second = write_record(tmp_path / "l05_seeds.csv", [("a_more_sft", "0", "overall", 0.5),
                                                       ("b_reca_sft (λ 0.5)", "0", "overall", 0.57)])
    merged = run_arms.read_runs([first, second])
    assert list(merged) == [("a_more_sft", 0), ("b_reca_sft (λ 1)", 0), ("b_reca_sft (λ 0.5)", 0)]
    clash = write_record(tmp_path / "clash_seeds.csv", [("a_more_sft", "0", "overall", 0.51)])
    with pytest.raises(ValueError, match=r"clash_seeds.csv:2: a_more_sft seed 0 overall is 0.51 here and 0.5"):
        run_arms.read_runs([first, clash])
    wrong = tmp_path / "wrong_seeds.csv"
    wrong.write_text("arm,metric,mean\n")
    with pytest.raises(ValueError, match="arm,seed,metric,value"):
        run_arms.read_runs([wrong])


def test_embed_rewrites_only_the_marked_blocks_from_their_records(tmp_path: Path) -> None:
    write_record(tmp_path / "exp_seeds.csv", [("a_more_sft", "0", "overall", 0.5), ("a_more_sft", "0", "colors", 0.25),
                                              ("a_more_sft", "1", "overall", 0.7), ("a_more_sft", "1", "colors", 0.35)])
    page = tmp_path / "page.md"
    page.write_text("Intro.\n\n<!-- results exp summary: overall -->\n| stale |\n<!-- /results -->\n\nMiddle.\n\n"
                    "<!-- results exp runs -->\n<!-- /results -->\n\n| a hand table | stays |\n")
    assert run_arms.main(["--summarise", str(tmp_path / "exp_seeds.csv"), "--embed", str(page)]) == 0
    text = page.read_text()
    assert ("<!-- results exp summary: overall -->\n\n| arm | seeds | overall |\n|---|---|---|\n"
            "| a_more_sft | 2 | 60.0 ± 14.1 |\n\n<!-- /results -->") in text
    assert "| a_more_sft | 1 | 70.0 | 35.0 |\n\n<!-- /results -->" in text
    assert text.startswith("Intro.") and "Middle." in text and text.endswith("| a hand table | stays |\n")
    assert run_arms.embed_in([page], tmp_path) == []  # up to date: nothing changes
    page.write_text("<!-- results missing summary -->\n<!-- /results -->\n")
    with pytest.raises(FileNotFoundError):
        run_arms.embed_in([page], tmp_path)


def test_arm_labels_carry_the_reca_weight_only_where_it_was_set() -> None:
    assert run_arms.arm_label("b_reca_sft", 0.5) == "b_reca_sft (λ 0.5)"
    assert run_arms.arm_label("c_template_only", 1.0) == "c_template_only (λ 1)"
    assert run_arms.arm_label("a_more_sft", 0.5) == "a_more_sft"  # no RecA term
    assert run_arms.arm_label("b_reca_sft", None) == "b_reca_sft" and run_arms.arm_label("sft", 0.5) == "sft"


def test_a_run_writes_its_record_and_tables_to_the_results_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(run_arms, "_reca", fake_reca([]))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(BASE))
    page = tmp_path / "page.md"
    page.write_text("<!-- results arms_l05_guidance2 summary: overall -->\n<!-- /results -->\n")
    results = tmp_path / "results"
    argv = ["--params", str(params), "--seeds", "0", "1", "--arms", "a_more_sft", "b_reca_sft", "--out",
            str(tmp_path / "arms_l05"), "--workdir", str(tmp_path), "--lambda-reca", "0.5", "--guidance-scale", "2",
            "--no-baseline", "--results-dir", str(results), "--embed", str(page)]
    assert run_arms.main(argv) == 0
    name = "arms_l05_guidance2"  # the --out folder's name and the guidance scale
    rows = list(csvrows(results / f"{name}_seeds.csv"))
    assert {(r["arm"], r["seed"]) for r in rows} == {("a_more_sft", "0"), ("a_more_sft", "1"),
                                                     ("b_reca_sft (λ 0.5)", "0"), ("b_reca_sft (λ 0.5)", "1")}
    assert "| b_reca_sft (λ 0.5) | 2 | 60.0 ± 0.0 | 30.0 ± 0.0 |" in (results / f"{name}.md").read_text()
    assert (results / f"{name}.csv").exists()
    assert "| b_reca_sft (λ 0.5) | 2 | 60.0 ± 0.0 |\n\n<!-- /results -->" in page.read_text()


def test_the_docs_tables_are_the_scripts_output_from_their_records(tmp_path: Path) -> None:
    docs = REPO / "docs" / "results"
    records = sorted(docs.glob("*_seeds.csv"))
    assert records, "docs/results holds no per-seed record"
    for record in records:
        name = record.name.removesuffix("_seeds.csv")
        written = run_arms.write_results(tmp_path, name, run_arms.read_runs([record]))
        for path in written.values():
            assert path.read_text() == (docs / path.name).read_text(), (
                f"docs/results/{path.name} is not what `run_arms.py --summarise {record.name}` writes")
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    for page in pages:
        text = page.read_text()
        assert run_arms.embed_tables(text, docs) == text, (
            f"{page.relative_to(REPO)}: a results block differs from its record; run "
            "`python scripts/run_arms.py --summarise docs/results/<name>_seeds.csv --embed README.md docs/research-log.md`")
    assert "<!-- results arms_1500_guidance1.5 summary" in (REPO / "README.md").read_text()


@pytest.mark.slow
def test_shrunken_sweep_trains_and_scores_every_arm(tmp_path: Path) -> None:
    params = json.loads(json.dumps(BASE))
    params["model"]["tiny"].update(hidden_size=64, num_layers=2, intermediate_size=128, vision_layers=1,
                                   codebook_size=128, kmeans_iters=2)
    # the research set-up: sft builds the tiny model from scratch (configs/presets/shapeworld-arms*.yaml)
    params["model"]["pretrained"] = None
    params["sft"].update(enabled=True, steps=3, warmup_steps=1, checkpoint_every=3, batch_size=4, log_every=1)
    params["train"].update(zero_stage=0, warmup_steps=1, checkpoint_every=2, batch_size=4, log_every=1)
    params["evaluate"].update(prompts_per_task=1, samples_per_prompt=1, n_reconstruction=2, batch_size=16)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    # Stages run in tmp_path (checkpoints land there) and find DeepSpeed's configs as in the repository.
    (tmp_path / "configs").symlink_to(REPO / "configs")

    def reca(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "reca.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"reca {args[0]}: {done.stderr[-3000:]}"

    reca("make-world", "--out", str(tmp_path / "raw"), "--captioned", "24", "--unlabeled", "12", "--heldout", "4")
    p = ("--params", str(params_file))
    reca("curate", *p, "--input", str(tmp_path / "raw"), "--output", str(tmp_path / "curated"))
    reca("degrade", *p, "--curated", str(tmp_path / "curated"), "--raw", str(tmp_path / "raw"), "--output",
         str(tmp_path / "degraded"))
    reca("sft", *p, "--degraded", str(tmp_path / "degraded"), "--output", str(tmp_path / "sft"))
    reca("embed", *p, "--degraded", str(tmp_path / "degraded"), "--model-dir", str(tmp_path / "sft"), "--output",
         str(tmp_path / "embeddings"))
    out = tmp_path / "arms"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_arms.py"), "--params", str(params_file), "--seeds", "0", "1",
         "--steps", "2", "--out", str(out), "--degraded", str(tmp_path / "degraded"), "--model-dir",
         str(tmp_path / "sft"), "--embeddings", str(tmp_path / "embeddings"), "--workdir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csvrows(out / "arms.csv"))
    runs = {(r["arm"], r["seed"]) for r in rows}
    assert runs == {("sft", "")} | {(arm, str(seed)) for arm in run_arms.ARMS for seed in (0, 1)}
    for arm in run_arms.ARMS:
        assert {"overall", "colors", "recon_psnr"} <= {r["metric"] for r in rows if r["arm"] == arm}
        trained = yaml.safe_load((out / arm / "seed1" / "params.yaml").read_text())["train"]
        assert trained["seed"] == 1 and trained["steps"] == 2
    assert "| d_reca_no_t2i | 2 |" in done.stdout


def csvrows(path: Path):
    import csv

    with open(path, encoding="utf-8") as fh:
        yield from csv.DictReader(fh)
