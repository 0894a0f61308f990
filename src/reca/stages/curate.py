"""`curate`: decide which raw images are usable, and account for every one.

Input: a directory tree whose top-level folders are splits, a list file of
paths, or webdataset ``.tar`` shards (see :mod:`reca.data.sources`); each
split folder may hold a ``captions.jsonl`` of ``{"file": ..., "caption": ...}``.
Images are checked in parallel worker processes, streamed in a deterministic
order; nothing decoded is kept, and the input is only read, never modified.

Output directory (written to a temporary directory renamed at the end):

* ``manifest.jsonl``   one row per usable image (id, path, split, sha256, phash,
  size, mode, format, caption; ``tar_offset``/``tar_size`` for shard members)
* ``quarantine.jsonl`` one row per rejected input (path, reason, detail)
* ``duplicates.jsonl`` one row per duplicate (path, duplicate_of, kind, distance)
* ``report.json``      counts; inputs = curated + quarantined + duplicates
* ``validation.json``  the great_expectations result over the above

When the suite fails, the outputs are still written (so they can be
inspected), the report says so, `degrade` refuses them, and this stage fails.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from reca.data.deduplication import Deduplicator
from reca.data.expectations import ManifestValidationError, validate_outputs
from reca.data.image_checks import ImageLimits, inspect_item
from reca.data.manifests import JsonlWriter
from reca.data.parallel import ordered_map
from reca.data.sources import ImageSource, SourceItem, SourceProblem
from reca.fileio import atomic_dir, read_jsonl, write_json
from reca.params import CurateParams
from reca.stage_files import CURATE_REPORT as REPORT
from reca.stage_files import CURATED_MANIFEST as MANIFEST
from reca.stage_files import DUPLICATES, QUARANTINE, VALIDATION

if TYPE_CHECKING:  # the tracking module imports torch; this stage never needs it
    from reca.tracking.mlflow_run import StageRun

# report count -> the file whose rows it counts (checked by the expectation suite)
COUNTED_FILES = {"curated": MANIFEST, "quarantined": QUARANTINE, "duplicates": DUPLICATES}


def _load_captions(split_dir: Path, caption_file: str) -> dict[str, str]:
    path = split_dir / caption_file
    if not path.exists():
        return {}
    captions = {}
    for row in read_jsonl(path):
        if "file" not in row or "caption" not in row:
            raise ValueError(f"{path}: every row needs 'file' and 'caption' keys, got {sorted(row)}")
        captions[str(row["file"])] = str(row["caption"])
    return captions


class _Ledger:
    """Sorts each inspected item into the manifest, quarantine or duplicates file, and counts."""

    def __init__(self, params: CurateParams, captions: dict[str, dict[str, str]], out: Path) -> None:
        self.params = params
        self.captions = captions
        self.dedupe = Deduplicator(exact=params.dedupe_exact, near=params.dedupe_near,
                                   max_bits=params.near_duplicate_bits,
                                   max_colour_diff=params.near_duplicate_colour_diff)
        self.files = {name: JsonlWriter(out / name) for name in COUNTED_FILES.values()}
        self.per_split: Counter[str] = Counter()
        self.per_reason: Counter[str] = Counter()
        self.per_kind: Counter[str] = Counter()

    def close(self) -> None:
        for writer in self.files.values():
            writer.close()

    def quarantine(self, path: str, reason: str, detail: str) -> None:
        self.per_reason[reason] += 1
        self.files[QUARANTINE].write({"path": path, "reason": reason, "detail": detail})

    def add(self, item: SourceItem | SourceProblem, result: dict[str, Any]) -> None:
        if not result["ok"]:
            self.quarantine(item.path, result["reason"], result["detail"])
            return
        caption = self.captions.get(item.split, {}).get(item.key, item.caption)
        if caption is None and item.split in self.params.caption_required_splits:
            self.quarantine(item.path, "missing_caption",
                            f"no row for {item.key!r} in {item.split}/{self.params.caption_file}")
            return
        duplicate = self.dedupe.check(item.path, result["sha256"], int(result["phash"], 16), result["signature"])
        if duplicate is not None:
            self.per_kind[duplicate.kind] += 1
            self.files[DUPLICATES].write({"path": item.path, "duplicate_of": duplicate.duplicate_of,
                                          "kind": duplicate.kind, "distance": duplicate.distance,
                                          "colour_diff": duplicate.colour_diff, "sha256": result["sha256"]})
            return
        self.per_split[item.split] += 1
        # The id keeps the extension: x.png and x.jpg side by side are two images.
        row = {"id": item.path, "path": item.path, "split": item.split,
               **{k: v for k, v in result.items() if k not in ("ok", "signature")}}
        if item.offset is not None:
            row.update(tar_offset=item.offset, tar_size=item.size)
        if caption is not None:
            row["caption"] = caption
        self.files[MANIFEST].write(row)


def run(params: CurateParams, input_path: str | Path, output_dir: str | Path,
        tracker: StageRun | None = None) -> dict[str, Any]:
    """Curate the images at ``input_path`` into ``output_dir``; return the report.

    Raises:
        FileNotFoundError: ``input_path`` does not exist.
        ManifestValidationError: the outputs failed the great_expectations suite
            (they are written anyway, with ``validation.json`` saying why).
    """
    source = ImageSource(input_path, params.splits, params.default_split)
    captions = {s: _load_captions(source.root / s, params.caption_file) for s in params.splits}
    limits = ImageLimits(params.min_side, params.max_aspect_ratio, params.max_pixels)
    check = partial(inspect_item, str(source.root), limits)
    start = time.perf_counter()
    with atomic_dir(output_dir) as tmp:
        ledger = _Ledger(params, captions, tmp)
        inputs = 0
        try:
            for item, result in tqdm(ordered_map(check, source, workers=params.workers), desc="curate",
                                     unit="img", mininterval=1.0):
                inputs += 1
                ledger.add(item, result)
        finally:
            ledger.close()
        seconds = time.perf_counter() - start
        report = {
            "inputs": inputs,
            "curated": sum(ledger.per_split.values()),
            "quarantined": sum(ledger.per_reason.values()),
            "duplicates": sum(ledger.per_kind.values()),
            "duplicates_exact": ledger.per_kind["exact"],
            "duplicates_near": ledger.per_kind["near"],
            "per_split": dict(sorted(ledger.per_split.items())),
            "per_reason": dict(sorted(ledger.per_reason.items())),
            "ignored_files": sum(source.ignored.values()),
            "ignored_by_extension": dict(sorted(source.ignored.items())),
        }
        validation = validate_outputs(params, tmp, report, COUNTED_FILES)
        report["validation"] = {"success": validation["success"], "failed": validation["failed"]}
        write_json(tmp / VALIDATION, validation)
        write_json(tmp / REPORT, report)
    # Timings go to the log and MLflow, not report.json: the same input must give the same output files.
    report.update(seconds=round(seconds, 3), images_per_s=round(inputs / seconds, 1) if seconds > 0 else 0.0)
    print(f"curate: {report['inputs']} inputs = {report['curated']} curated + {report['quarantined']} quarantined "
          f"+ {report['duplicates']} duplicates ({report['images_per_s']} images/s)", file=sys.stderr)
    _log(tracker, report, Path(output_dir))
    if not validation["success"]:
        raise ManifestValidationError(
            f"{Path(output_dir) / VALIDATION}: the curated manifest failed {len(validation['failed'])} "
            "expectation(s): " + "; ".join(validation["failed"])
        )
    return report


def _log(tracker: StageRun | None, report: dict[str, Any], output_dir: Path) -> None:
    if tracker is None:
        return
    metrics = {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    metrics.update({f"quarantined.{k}": v for k, v in report["per_reason"].items()})
    metrics.update({f"curated.{k}": v for k, v in report["per_split"].items()})
    metrics["validation_success"] = int(report["validation"]["success"])
    tracker.log_metrics(metrics)
    for name in (REPORT, VALIDATION, QUARANTINE, DUPLICATES):
        tracker.log_artifact(output_dir / name, artifact_path="curate")
