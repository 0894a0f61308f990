"""`degrade`: the understanding-input copy and the generation-target copy of every curated image.

The understanding copy is what ``h_v`` is computed from: resized to the
encoder's input size (shorter side then centre crop, or longer side then
pad) and optionally down-up scaled and Gaussian-blurred, because a sharp,
high-resolution condition lets the generator copy pixels instead of learning
semantics. The generation copy is the reconstruction target at the
generation branch's own resolution, resized the same way, never degraded.

Images are read back from the raw source through :mod:`reca.data.sources`
(files in place, tar shard members at their recorded offsets), checked
against the SHA-256 `curate` recorded, and processed in parallel worker
processes in manifest order. Output directory:

* ``understanding/<name>.png``, ``generation/<name>.png`` (``<name>`` is the
  image id, with ``::`` of shard members as a folder; ids that are absolute
  or climb out with ``..`` go under ``_external/<hash>/``)
* ``manifest.jsonl``: id, split, caption, source path, sha256, and the two relative paths
* ``degrade.json``: the settings every copy was made with (part of the embedding cache key)
"""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from reca.data.degraded_copies import CopySettings, StaleCurationError, write_copies
from reca.data.manifests import count_rows, iter_jsonl
from reca.data.parallel import ordered_map
from reca.data.sources import source_root
from reca.fileio import atomic_dir, read_json, write_json, write_jsonl
from reca.params import DegradeParams
from reca.stage_files import CURATE_REPORT as CURATED_REPORT
from reca.stage_files import CURATED_MANIFEST
from reca.stage_files import DEGRADE_RECORD as RECORD
from reca.stage_files import DEGRADED_MANIFEST as MANIFEST

if TYPE_CHECKING:  # the tracking module imports torch; this stage never needs it
    from reca.tracking.mlflow_run import StageRun


def settings_record(params: DegradeParams) -> dict[str, Any]:
    """The settings that determine the copies' pixels (``workers`` does not): ``degrade.json``."""
    return params.model_dump(exclude={"workers"})


def _check_curation(curated_dir: Path) -> Path:
    manifest = curated_dir / CURATED_MANIFEST
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} not found: run `reca curate` (dvc repro curate) first")
    report_path = curated_dir / CURATED_REPORT
    report = read_json(report_path) if report_path.exists() else {}
    if not report.get("validation", {}).get("success", True):
        raise StaleCurationError(
            f"{report_path}: curation failed its great_expectations checks "
            f"({'; '.join(report['validation']['failed'])}); see validation.json there, fix, and rerun `reca curate`"
        )
    return manifest


def run(params: DegradeParams, curated_dir: str | Path, raw_dir: str | Path, output_dir: str | Path,
        tracker: StageRun | None = None) -> dict[str, Any]:
    """Write both copies of every curated image; return a summary.

    ``raw_dir`` is the source `curate` read (a folder, a list file or a shard):
    manifest paths are relative to it.

    Raises:
        FileNotFoundError: no curated manifest.
        StaleCurationError: curation failed its checks, or a raw image changed since.
    """
    manifest = _check_curation(Path(curated_dir))
    settings = CopySettings(**settings_record(params))
    start = time.perf_counter()
    with atomic_dir(output_dir) as tmp:
        work = partial(write_copies, str(source_root(raw_dir)), str(tmp), settings)
        results = ordered_map(work, iter_jsonl(manifest), workers=params.workers)
        rows = (row for _, row in tqdm(results, total=count_rows(manifest), desc="degrade", unit="img",
                                        mininterval=1.0))
        images = write_jsonl(tmp / MANIFEST, rows)
        write_json(tmp / RECORD, settings_record(params))
    seconds = time.perf_counter() - start
    summary = {"images": images, "seconds": round(seconds, 3),
               "images_per_s": round(images / seconds, 1) if seconds > 0 else 0.0, **settings_record(params)}
    print(f"degrade: {images} images ({summary['images_per_s']} images/s)", file=sys.stderr)
    if tracker is not None:
        tracker.log_metrics({"images": images, "seconds": summary["seconds"], "images_per_s": summary["images_per_s"]})
        tracker.log_artifact(Path(output_dir) / RECORD, artifact_path="degrade")
    return summary
