"""Where `make run`'s time goes: each stage of the default pipeline, timed in order.

Runs ``dvc pull data.dvc start_model`` and then ``dvc repro --force --single-item
<stage>`` for every stage of ``dvc.yaml`` in pipeline order (the frozen
``start_model`` is pulled, not run), and prints one row per stage: wall time,
its share of the total, and the stage process tree's peak resident memory
(from GNU time when it is installed). Run it from the repository root on an
otherwise idle machine; it rewrites the stage outputs as ``dvc repro`` would.

    python benchmarks/bench_make_run.py [--stages curate degrade ...]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

GNU_TIME = Path("/usr/bin/time")


def pipeline_stages(dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """The stages `dvc repro` runs, in the file's (pipeline) order, frozen ones left out."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return [name for name, stage in stages.items() if not stage.get("frozen")]


def timed(cmd: list[str]) -> tuple[float, float | None]:
    """Run ``cmd``; return its wall seconds and peak resident GB (None without GNU time)."""
    prefix = [str(GNU_TIME), "-f", "peak_kb=%M"] if GNU_TIME.exists() else []
    start = time.perf_counter()
    done = subprocess.run(prefix + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    peak = re.findall(r"peak_kb=(\d+)", done.stderr)
    return wall, (int(peak[-1]) / 1e6 if peak else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="*", default=None, help="stages to time (default: every stage)")
    args = parser.parse_args(argv)
    dvc = shutil.which("dvc") or "dvc"
    rows = [("pull data + start model", *timed([dvc, "pull", "-q", "data.dvc", "start_model"]))]
    for stage in args.stages or pipeline_stages():
        rows.append((stage, *timed([dvc, "repro", "--force", "--single-item", stage])))
    total = sum(wall for _, wall, _ in rows)
    print("| stage | wall (s) | share | peak memory (GB) |")
    print("|---|---|---|---|")
    for name, wall, peak in rows:
        print(f"| {name} | {wall:.1f} | {100 * wall / total:.0f}% | {'–' if peak is None else f'{peak:.2f}'} |")
    print(f"| **total** | {total:.1f} ({total / 60:.1f} min) | 100% | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
