"""Throughput of `curate` + `degrade` against the bare cost of decoding the same JPEGs.

Makes a few thousand JPEGs of varied sizes (smooth scenes with texture, like
photos, 256-640 px), then times, in this order:

* the floor: ``Image.open(...).convert("RGB")`` of every file in one process,
  the least any pipeline that looks at every pixel must pay;
* `curate` (decode check, hashes, perceptual hash, dedupe, manifests,
  great_expectations suite) and `degrade` (224 px understanding copy with
  down-up scaling, 256 px generation copy, both PNG), with one worker and
  with every core.

great_expectations is imported before timing (its one-off import, a few
seconds, is printed separately): the table compares per-image work.

    python benchmarks/bench_data.py [--images 2000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from reca.data.parallel import available_cores
from reca.params import CurateParams, DegradeParams
from reca.stages import curate, degrade


def make_jpegs(root: Path, n: int, seed: int = 0) -> int:
    """Write ``n`` distinct JPEGs under ``root/unlabeled``; return their total bytes."""
    rng = np.random.default_rng(seed)
    out = root / "unlabeled"
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(n):
        w, h = (int(v) for v in rng.integers(256, 641, 2))
        # Low-frequency colour field plus fine noise: compresses like a photo, hashes apart from its neighbours.
        coarse = rng.random((6, 8, 3)) * 255
        img = Image.fromarray(coarse.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (h, w, 1), dtype=np.int16)
        path = out / f"{i:06d}.jpg"
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        total += path.stat().st_size
    return total


def clocks() -> tuple[float, float]:
    """Wall time, and CPU time of this process plus its finished children (the worker pools)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def since(start: tuple[float, float]) -> tuple[float, float]:
    now = clocks()
    return now[0] - start[0], now[1] - start[1]


def time_floor(root: Path) -> tuple[float, float]:
    start = clocks()
    for path in sorted((root / "unlabeled").iterdir()):
        with Image.open(path) as img:
            img.convert("RGB")
    return since(start)


def time_stages(raw: Path, work: Path, workers: int) -> tuple[tuple[float, float], tuple[float, float]]:
    cur, deg = work / f"curated-{workers}", work / f"degraded-{workers}"
    start = clocks()
    report = curate.run(CurateParams(workers=workers), raw, cur)
    curate_times = since(start)
    start = clocks()
    degrade.run(DegradeParams(understanding_size=224, generation_size=256, downup_factor=0.5, workers=workers),
                cur, raw, deg)
    assert report["curated"] == report["inputs"], report
    return curate_times, since(start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="JPEGs to make (default 2000)")
    parser.add_argument("--keep", type=Path, default=None, help="work in this directory and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="reca-bench-data-"))
    raw = work / "raw"
    try:
        if not (raw / "unlabeled").is_dir():
            size = make_jpegs(raw, args.images)
            print(f"made {args.images} JPEGs, {size / 1e6:.1f} MB, in {raw}")
        n = sum(1 for _ in (raw / "unlabeled").iterdir())
        start = time.perf_counter()
        import great_expectations  # noqa: F401 - one-off import, kept out of the per-image timings

        print(f"great_expectations import (once per curate run): {time.perf_counter() - start:.1f} s")
        floor = time_floor(raw)
        rows = [("Pillow decode, 1 process (floor)", floor)]
        cores = available_cores()
        for workers in sorted({1, cores}):
            (cur_s, cur_cpu), (deg_s, deg_cpu) = time_stages(raw, work, workers)
            rows += [(f"curate, {workers} worker(s)", (cur_s, cur_cpu)),
                     (f"degrade, {workers} worker(s)", (deg_s, deg_cpu)),
                     (f"curate + degrade, {workers} worker(s)", (cur_s + deg_s, cur_cpu + deg_cpu))]
        load = os.getloadavg()[0]
        print(f"\n{n} images, {cores} cores available, load average {load:.1f} at the end\n")
        print(f"| {'run':<36} | {'seconds':>8} | {'images/s':>9} | {'vs floor':>8} | {'CPU ms/image':>12} |")
        print(f"|{'-' * 38}|{'-' * 10}|{'-' * 11}|{'-' * 10}|{'-' * 14}|")
        for name, (seconds, cpu) in rows:
            print(f"| {name:<36} | {seconds:8.2f} | {n / seconds:9.1f} | {floor[0] / seconds:7.2f}x "
                  f"| {cpu / n * 1e3:12.2f} |")
        print("\nvs floor: throughput relative to the floor (1.00x = as fast as bare decoding).\n"
              "CPU ms/image: user + system time of this process and its worker processes, per image.")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
