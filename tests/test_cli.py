"""The `reca` command line: help text and error reporting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reca.cli import build_parser, main


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no public listing
    assert {"curate", "degrade", "sft", "embed", "train", "post-sft", "evaluate"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: reca" in capsys.readouterr().out


def test_bad_params_exit_2_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  lrr: 0.1\n")
    assert main(["check-params", "--params", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "train.lrr" in err and "unknown key" in err and "lr" in err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "reca.cli", "adapters"], capture_output=True, text=True, check=True)
    assert "janus_ar" in out.stdout


def test_sft_reads_the_template_bank_train_will_use(tmp_path):
    import argparse

    from reca.cli import _reca_templates
    from reca.objectives.templates import RECONSTRUCTION_TEMPLATES

    params = tmp_path / "params.yaml"
    params.write_text("sft:\n  steps: 10\n")
    assert _reca_templates(argparse.Namespace(params=str(params))) == RECONSTRUCTION_TEMPLATES
    bank = tmp_path / "bank.txt"
    bank.write_text("paint it again\n# a comment\ncopy   the picture\n", encoding="utf-8")
    params.write_text(f"sft:\n  steps: 10\ntrain:\n  template_file: {bank}\n")
    assert _reca_templates(argparse.Namespace(params=str(params))) == ("paint it again", "copy the picture")
    bank.unlink()
    with pytest.raises(FileNotFoundError, match="bank.txt"):
        _reca_templates(argparse.Namespace(params=str(params)))
