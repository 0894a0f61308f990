"""scripts/ablations.sh: every ablation is a valid `dvc exp run -S` of params.yaml, documented in docs/ablations.md."""

from __future__ import annotations

import shlex
import subprocess

import yaml

from reca.params import validate_file
from reca_fixtures import REPO


def _dry_run(*names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(REPO / "scripts" / "ablations.sh"), "--dry-run", *names], capture_output=True,
                          text=True, timeout=30)


def _commands() -> dict[str, dict[str, object]]:
    out = _dry_run()
    assert out.returncode == 0, out.stderr
    commands = {}
    for line in out.stdout.splitlines():
        words = shlex.split(line)
        assert words[:4] == ["dvc", "exp", "run", "--temp"], line
        name = words[words.index("-n") + 1]
        overrides = {}
        for i, word in enumerate(words):
            if word == "-S":
                key, value = words[i + 1].split("=", 1)
                overrides[key] = yaml.safe_load(value)
        commands[name] = {"line": line, "overrides": overrides}
    return commands


def test_every_ablation_sets_existing_params_to_valid_values(tmp_path):
    commands = _commands()
    assert {"res-low", "res-high", "blur-on", "blur-off", "i2t-0", "i2t-1"} <= set(commands)
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, command in commands.items():
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        for key, value in command["overrides"].items():
            section, field = key.split(".")
            assert field in base[section], f"{name}: {key} is not in params.yaml"
            params[section][field] = value
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(params))
        validate_file(path)  # raises, naming the key, on a bad value


def test_each_pair_differs_in_the_one_thing_it_ablates():
    commands = {name: c["overrides"] for name, c in _commands().items()}

    def differing(a: str, b: str) -> set[str]:
        return {k for k in commands[a].keys() | commands[b].keys() if commands[a].get(k) != commands[b].get(k)}

    assert differing("res-low", "res-high") == {"degrade.downup_factor"}
    assert differing("blur-on", "blur-off") == {"degrade.blur_sigma"}
    assert differing("i2t-0", "i2t-1") == {"train.lambda_i2t"}
    assert commands["i2t-0"]["train.lambda_i2t"] == 0 and commands["i2t-1"]["train.lambda_i2t"] == 1
    assert differing("cond-understanding", "cond-vae-latents") == {"train.condition"}
    assert commands["cond-vae-latents"]["train.condition"] == "generation_latents"
    # The order pair spends the same SFT steps on the published model, before RecA (sft) or after it (post_sft).
    assert differing("order-sft-reca", "order-reca-sft") == {"sft.enabled", "post_sft.steps"}
    before, after = commands["order-sft-reca"], commands["order-reca-sft"]
    assert str(before["sft.enabled"]).lower() == "true" and before["post_sft.steps"] == 0
    assert str(after["sft.enabled"]).lower() == "false" and after["post_sft.steps"] == before["sft.steps"] > 0


def test_every_ablation_command_is_documented():
    page = (REPO / "docs" / "ablations.md").read_text()
    for name, command in _commands().items():
        assert command["line"] in page, f"docs/ablations.md lacks the command of ablation {name}"


def test_an_unknown_ablation_runs_nothing():
    out = _dry_run("res-low", "no-such-ablation")
    assert out.returncode == 2 and out.stdout == ""
    assert "unknown ablation no-such-ablation" in out.stderr and "res-low" in out.stderr
