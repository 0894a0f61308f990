"""`degrade`: the understanding-input copy and the generation-target copy of every curated image.

The understanding copy is what ``h_v`` is computed from: resized to the
encoder's input size and optionally blurred or down-up scaled, because a
sharp, high-resolution condition lets the generator copy pixels instead of
learning semantics. The generation copy is the reconstruction target at the
generation branch's resolution. Output directory:

* ``understanding/<id>.png``, ``generation/<id>.png``
* ``manifest.jsonl``: id, split, caption, and the two relative paths
* ``degrade.json``: the settings every copy was made with (part of the embedding cache key)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from reca.data.images import decode_rgb
from reca.data.transforms import degrade, resize
from reca.fileio import atomic_dir, read_jsonl, write_json, write_jsonl
from reca.params import DegradeParams
from reca.stages.curate import MANIFEST as CURATED_MANIFEST

MANIFEST = "manifest.jsonl"
RECORD = "degrade.json"


def run(params: DegradeParams, curated_dir: str | Path, raw_dir: str | Path, output_dir: str | Path) -> dict[str, Any]:
    """Write both copies of every curated image; return a summary."""
    curated_dir, raw_dir = Path(curated_dir), Path(raw_dir)
    manifest_path = curated_dir / CURATED_MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} not found: run `reca curate` (dvc repro curate) first")
    rows = read_jsonl(manifest_path)
    out_rows = []
    with atomic_dir(output_dir) as tmp:
        for row in tqdm(rows, desc="degrade", unit="img", mininterval=1.0):
            image = decode_rgb(raw_dir / row["path"]).image
            und = degrade(resize(image, params.understanding_size, params.resize_mode),
                          blur_sigma=params.blur_sigma, downup_factor=params.downup_factor)
            gen = resize(image, params.generation_size, params.resize_mode)
            paths = {"understanding": f"understanding/{row['id']}.png", "generation": f"generation/{row['id']}.png"}
            for kind, img in (("understanding", und), ("generation", gen)):
                target = tmp / paths[kind]
                target.parent.mkdir(parents=True, exist_ok=True)
                img.save(target, format="PNG")
            out = {"id": row["id"], "split": row["split"], **paths}
            if "caption" in row:
                out["caption"] = row["caption"]
            out_rows.append(out)
        write_jsonl(tmp / MANIFEST, out_rows)
        write_json(tmp / RECORD, params.model_dump())
    return {"images": len(out_rows), **params.model_dump()}
