"""3D benchmark: zoo models vs ANTs SyN on MNI152 2 mm pairs never used in training.

    python bench/bench_3d.py [--cases 5] [--methods ...]

Each (method, case) runs in its own process (bench/_one_case.py) so time and peak memory are
comparable; medians over cases are written to bench/results/bench_3d.json and printed as a table
with ratios against ANTs SyN measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
DEFAULT = ["deformable-3d:0", "deformable-3d:50", "affine-3d+deformable-3d:50", "ants-syn:0"]


def run(method: str, steps: int, seed: int, data: str) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "_one_case.py"), method, data, str(seed),
                          str(steps)], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--data", default="mni")
    parser.add_argument("--methods", nargs="*", default=DEFAULT)
    parser.add_argument("--output", default=str(HERE / "results" / "bench_3d.json"))
    args = parser.parse_args()
    rows = []
    for spec in args.methods:
        method, steps = spec.split(":") if ":" in spec else (spec, "0")
        for k in range(args.cases):
            try:
                rows.append(run(method, int(steps), args.seed + k, args.data))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"skipped: {exc}", file=sys.stderr)
                break
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for spec in args.methods:
        method, steps = spec.split(":") if ":" in spec else (spec, "0")
        sel = [r for r in rows if r["method"] == method and r["refine_steps"] == int(steps)]
        if sel:
            keys = ["dice_before", "dice", "epe_before_mm", "epe_mm", "folding_percent",
                    "reg_seconds", "process_seconds", "peak_rss_gb"]
            summary[spec] = {k: statistics.median(r[k] for r in sel) for k in keys}
            summary[spec]["cases"] = len(sel)
    ants = summary.get("ants-syn:0")
    if ants:
        for spec, s in summary.items():
            s["speedup_vs_ants_reg"] = ants["reg_seconds"] / s["reg_seconds"]
            s["speedup_vs_ants_process"] = ants["process_seconds"] / s["process_seconds"]
    Path(args.output).write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    print("\n| method | Dice | EPE mm | folding % | reg s | process s | peak GB | x ANTs (reg) |")
    print("|---|---|---|---|---|---|---|---|")
    for spec, s in summary.items():
        print(f"| {spec} | {s['dice']:.3f} | {s['epe_mm']:.2f} | {s['folding_percent']:.3f} | "
              f"{s['reg_seconds']:.2f} | {s['process_seconds']:.2f} | {s['peak_rss_gb']:.2f} | "
              f"{s.get('speedup_vs_ants_reg', float('nan')):.1f} |")


if __name__ == "__main__":
    main()
