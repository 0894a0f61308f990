"""Lineage tags of a run: the code (git commit, dirty flag), the inputs (DVC hashes) and the experiment.

Every MLflow run the pipeline opens carries these tags, so a number in the
MLflow UI can be traced back to the exact code and data that produced it:

* ``git.commit``, ``git.dirty``: the working tree the stage ran in.
* ``dvc.stage``: the DVC stage address, when DVC launched the command.
* ``dvc.dep.<path>``: the hash of each of the stage's ``deps``, computed by
  DVC itself with the same code that writes ``dvc.lock`` after the stage
  finishes, so the tags equal that stage's ``dvc.lock`` entry (md5 of a file,
  ``<md5>.dir`` for a directory). Parameter deps are not hashes in
  ``dvc.lock``; the run's ``params.yaml`` artifact records them.
* ``dvc.exp_name``, ``dvc.exp_baseline``: set under ``dvc exp run``.

Hashing is skipped outside a DVC-launched command (``DVC_STAGE`` unset): a
stage run by hand with other paths than ``dvc.yaml`` names would get hashes
of files it never read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

# Environment DVC sets for every stage command (dvc/env.py).
DVC_STAGE_ENV = "DVC_STAGE"
DVC_ROOT_ENV = "DVC_ROOT"
DVC_EXP_NAME_ENV = "DVC_EXP_NAME"
DVC_EXP_BASELINE_ENV = "DVC_EXP_BASELINE_REV"

DEP_TAG_PREFIX = "dvc.dep."
_TAG_UNSAFE = re.compile(r"[^\w./ -]")


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_tags(root: str | Path) -> dict[str, str]:
    """Git commit and dirty flag of the working tree at ``root``.

    Dirty means a tracked file differs from the commit. ``dvc.lock`` files do
    not count: DVC rewrites them after every stage of a ``dvc repro``, so every
    stage after the first would otherwise look dirty; the ``dvc.dep.*`` tags
    record what they hold.
    """
    root = Path(root)
    commit = _git(root, "rev-parse", "HEAD")
    dirty = False
    if commit:
        changed = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".",
                       ":(exclude,glob)**/dvc.lock")
        dirty = bool(changed)
    return {"git.commit": commit or "unknown", "git.dirty": str(dirty).lower()}


def dep_tag(path: str) -> str:
    """MLflow tag key for a dependency path (characters MLflow rejects become ``_``)."""
    return DEP_TAG_PREFIX + _TAG_UNSAFE.sub("_", path.strip("/"))


def dvc_dep_hashes(root: str | Path, stage: str) -> dict[str, str]:
    """Hashes of ``stage``'s file and directory deps, as DVC records them in ``dvc.lock``.

    Args:
        root: Directory inside the DVC repository the stage runs in.
        stage: Stage address as DVC gives it in ``DVC_STAGE`` (``train`` or
            ``sub/dvc.yaml:train``).

    Returns:
        ``{dep path as written in dvc.yaml: hash}``; a dep that cannot be
        hashed (missing file) maps to ``"missing"``.
    """
    # Imported here: dvc is heavy and only needed when DVC launched the stage.
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    hashes: dict[str, str] = {}
    with Repo(str(root)) as repo:
        (collected,) = repo.stage.collect(stage)
        for dep in collected.deps:
            if isinstance(dep, ParamsDependency):
                continue
            try:
                hashes[dep.def_path] = str(dep.get_hash().value)
            except (OSError, ValueError) as err:
                log.warning("cannot hash dependency %s of stage %s: %s", dep.def_path, stage, err)
                hashes[dep.def_path] = "missing"
    return hashes


def dvc_tags(root: str | Path) -> dict[str, str]:
    """DVC experiment, stage and dependency-hash tags of the command DVC is running now.

    Empty when DVC did not launch this process. Lineage must never fail a
    stage that did its work, so an error computing hashes becomes the tag
    ``dvc.lineage_error`` instead of an exception.
    """
    tags = {tag: os.environ[env] for env, tag in ((DVC_EXP_NAME_ENV, "dvc.exp_name"),
                                                  (DVC_EXP_BASELINE_ENV, "dvc.exp_baseline"))
            if os.environ.get(env)}
    stage = os.environ.get(DVC_STAGE_ENV)
    if not stage:
        return tags
    tags["dvc.stage"] = stage
    try:
        tags.update({dep_tag(path): value for path, value in dvc_dep_hashes(root, stage).items()})
    except Exception as err:  # noqa: BLE001 - see docstring: lineage is best effort, the stage's work is not
        log.warning("could not compute dvc.lock hashes for stage %s: %s", stage, err)
        tags["dvc.lineage_error"] = f"{type(err).__name__}: {err}"[:500]
    return tags


def file_md5(path: str | Path) -> str:
    """md5 of a file's bytes (the hash DVC uses), e.g. for the ``params.yaml`` a run used."""
    return hashlib.md5(Path(path).read_bytes(), usedforsecurity=False).hexdigest()


def lineage_tags(root: str | Path, params_file: str | Path | None = None) -> dict[str, str]:
    """Every lineage tag of a run started in ``root``: git, DVC stage and deps, params file hash.

    ``params_file`` defaults to ``root/params.yaml``.
    """
    root = Path(root)
    tags = {**git_tags(root), **dvc_tags(root)}
    params = Path(params_file) if params_file is not None else root / "params.yaml"
    if params.exists():
        tags["params.md5"] = file_md5(params)
    return tags
