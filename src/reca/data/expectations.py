"""The great_expectations suite that `curate`'s outputs must pass before `degrade` may use them.

Two batches are validated in an ephemeral GX context (nothing is written
outside the stage's output, no network):

* the manifest, one row per curated image: ids, paths and content hashes
  unique; hashes in their formats; sizes, aspect ratios and pixel counts
  within the curate limits; splits and modes from the known sets; captions
  present where a split requires them; as many rows as the report says;
* the report: inputs = curated + quarantined + duplicates, and each count
  equal to the rows actually written in its file.

great_expectations takes seconds to import, so it is imported only here,
only when `curate` validates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from reca.data.images import SUPPORTED_FORMATS
from reca.data.manifests import count_rows, iter_jsonl
from reca.data.perceptual_hash import HASH_HEX_DIGITS
from reca.params import CurateParams

MANIFEST_COLUMNS = ("id", "path", "split", "sha256", "phash", "width", "height", "mode", "format", "caption")


class ManifestValidationError(RuntimeError):
    """The curated manifest failed the great_expectations suite."""


def _manifest_frame(manifest: Path) -> Any:
    import pandas as pd

    # From parsed JSON, not pd.read_json: its type inference turns a mode "1" or a caption "2" into numbers.
    frame = pd.DataFrame(iter_jsonl(manifest))
    for column in MANIFEST_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame["short_side"] = frame[["width", "height"]].min(axis=1)
    frame["aspect"] = frame[["width", "height"]].max(axis=1) / frame["short_side"]
    frame["pixels"] = frame["width"] * frame["height"]
    return frame


def _manifest_expectations(params: CurateParams, n_rows: int) -> list[Any]:
    import great_expectations.expectations as gxe

    suite = [
        gxe.ExpectTableRowCountToEqual(value=n_rows),
        gxe.ExpectTableColumnsToMatchSet(column_set=[*MANIFEST_COLUMNS, "short_side", "aspect", "pixels"],
                                         exact_match=False),
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("id", "path", "split", "sha256", "phash",
                                                                "width", "height", "mode", "format")],
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="path"),
        gxe.ExpectColumnValuesToMatchRegex(column="sha256", regex=r"^[0-9a-f]{64}$"),
        gxe.ExpectColumnValuesToMatchRegex(column="phash", regex=rf"^[0-9a-f]{{{HASH_HEX_DIGITS}}}$"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(params.splits)),
        gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=sorted(Image.MODES)),
        gxe.ExpectColumnValuesToBeInSet(column="format", value_set=list(SUPPORTED_FORMATS)),
        gxe.ExpectColumnValuesToBeBetween(column="short_side", min_value=params.min_side),
        gxe.ExpectColumnValuesToBeBetween(column="aspect", min_value=1.0, max_value=params.max_aspect_ratio),
        gxe.ExpectColumnValuesToBeBetween(column="pixels", min_value=1, max_value=params.max_pixels),
    ]
    if params.dedupe_exact:
        suite.append(gxe.ExpectColumnValuesToBeUnique(column="sha256"))
    for split in params.caption_required_splits:
        suite.append(gxe.ExpectColumnValuesToNotBeNull(
            column="caption", row_condition=f'split=="{split}"', condition_parser="pandas"))
    return suite


def _report_frame(report: dict[str, Any], output_dir: Path, files: dict[str, str]) -> Any:
    import pandas as pd

    row = {k: report[k] for k in ("inputs", "curated", "quarantined", "duplicates")}
    row["accounted"] = report["curated"] + report["quarantined"] + report["duplicates"]
    for count, name in files.items():
        row[f"{count}_rows"] = count_rows(output_dir / name)
    return pd.DataFrame([row])


def _report_expectations(files: dict[str, str]) -> list[Any]:
    import great_expectations.expectations as gxe

    suite = [gxe.ExpectColumnPairValuesToBeEqual(column_A="inputs", column_B="accounted")]
    suite += [gxe.ExpectColumnPairValuesToBeEqual(column_A=count, column_B=f"{count}_rows") for count in files]
    return suite


def validate_outputs(params: CurateParams, output_dir: str | Path, report: dict[str, Any],
                     files: dict[str, str]) -> dict[str, Any]:
    """Run the suite over `curate`'s output directory.

    Args:
        params: the curate limits the manifest must respect.
        output_dir: where ``files`` live.
        report: the counts `curate` computed.
        files: report count name -> file name, e.g. ``{"curated": "manifest.jsonl", ...}``;
            the ``curated`` entry is the manifest.

    Returns:
        ``{"success": bool, "failed": [expectation summaries], "results": {batch: GX result JSON}}``.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    output_dir = Path(output_dir)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("curate")
    batches = {
        "manifest": (_manifest_frame(output_dir / files["curated"]),
                     _manifest_expectations(params, report["curated"])),
        "report": (_report_frame(report, output_dir, files), _report_expectations(files)),
    }
    out: dict[str, Any] = {"success": True, "failed": [], "results": {}}
    for name, (frame, expectations) in batches.items():
        definition = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        suite = gx.ExpectationSuite(name=f"curate_{name}", expectations=expectations)
        result = definition.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
        payload = result.to_json_dict()
        # The load time would make identical inputs give different outputs (and DVC hashes).
        payload.get("meta", {}).get("batch_markers", {}).pop("ge_load_time", None)
        out["results"][name] = payload
        out["success"] = out["success"] and bool(result.success)
        for r in payload["results"]:
            if not r["success"]:
                cfg = r["expectation_config"]
                kwargs = {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"}
                sample = r.get("result", {}).get("partial_unexpected_list", [])[:5]
                out["failed"].append(f"{name}: {cfg['type']} {json.dumps(kwargs, default=str)}"
                                     + (f" unexpected e.g. {sample}" if sample else ""))
    return out
