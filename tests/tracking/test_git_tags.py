"""The git lineage tags: commit, and a dirty flag that DVC's own bookkeeping does not set."""

from __future__ import annotations

from reca.tracking.lineage import git_tags
from reca_fixtures.tools import run_tool


def test_dirty_means_a_tracked_file_changed_but_not_dvc_lock(tmp_path):
    (tmp_path / "train.py").write_text("lr = 1\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "dvc.lock").write_text("schema: '2.0'\n")
    run_tool(["git", "init", "-q"], tmp_path)
    run_tool(["git", "add", "-A"], tmp_path)
    run_tool(["git", "commit", "-qm", "init"], tmp_path)
    head = run_tool(["git", "rev-parse", "HEAD"], tmp_path).stdout.strip()
    assert git_tags(tmp_path) == {"git.commit": head, "git.dirty": "false"}

    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (tmp_path / "sub" / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (tmp_path / "untracked.txt").write_text("scratch\n")
    assert git_tags(tmp_path)["git.dirty"] == "false"

    (tmp_path / "train.py").write_text("lr = 2\n")
    assert git_tags(tmp_path)["git.dirty"] == "true"


def test_outside_a_git_repository_the_commit_is_unknown(tmp_path):
    assert git_tags(tmp_path) == {"git.commit": "unknown", "git.dirty": "false"}
