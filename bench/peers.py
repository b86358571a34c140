"""Peers benchmark: our presets against ANTs SyN, Greedy and DIPY SyN on cases with known truth.

    python bench/peers.py [--data slice mni mni1mm] [--cases 5] [--methods ...]

For every data kind, ``--cases`` pairs are drawn by ``deepreg_core.evaluation.make_case`` with
seeds from ``--seed`` (1000: disjoint from training's seeds), each written once to a temporary
file. Every (method, case) then runs in its own process (``bench/_one_case.py``, with a timeout),
so time and peak memory are those of that method alone; the methods take turns case by case, so a
change in the machine's load touches them all alike. Per data kind the driver writes
``bench/results/peers_<data>.json`` (rows, failures, skipped peers, medians) and
``bench/results/peers_<data>.md``, the table it prints:

method | Dice | EPE mm | folding % | reg s | process s | peak GB | speed-up on ANTs (process)

(medians over the cases; the last column is ANTs SyN's median process time over the method's,
both measured in this run: above 1, faster than ANTs). Data kinds: ``slice`` (2D MNI152
slices, 128×128, 2 mm, a random orientation per case), ``mni`` (MNI152 2 mm, 99×117×95),
``mni1mm`` (the 1 mm template, 197×233×189: the peers take minutes per case there), and the real
scans of ``deepreg_core.evaluation.REAL_SCANS`` (``t1slice``, ``nib-t1``, ``nib-epi``,
``dipy-b0``). A peer whose package is missing is reported
as skipped, with the pip command that installs it (``pip install ./src_core[bench]`` installs
them all).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
DEFAULT_METHODS = ["deepreg:fast", "deepreg:auto", "deepreg:accurate", "ants-syn", "greedy",
                   "dipy-syn"]
DATA = {
    "slice": "2D MNI152 slices (any orientation, position, layout), 128×128, spacing 2 mm",
    "mni": "MNI152 2 mm volumes, 99×117×95, spacing 2 mm",
    "mni1mm": "MNI152 1 mm volumes, 197×233×189, spacing 1 mm",
    "t1slice": "dipy's real T1 coronal slice (not MNI152), 256×256, spacing 1 mm; labels: its "
               "four multi-Otsu intensity classes",
    "nib-t1": "nibabel's real T1 (not MNI152), 33×41×25, spacing 2 mm; labels: its three "
              "multi-Otsu classes",
    "nib-epi": "nibabel's real EPI (example4d, first volume), 128×96×24, spacing 2×2×2.2 mm; "
               "labels: its three multi-Otsu classes",
    "dipy-b0": "dipy's real diffusion b0 (aniso_vox), 58×58×24, spacing 4×4×5 mm; labels: its "
               "three multi-Otsu classes",
}
# module(s) a peer imports -> the pip command that provides them
REQUIRES = {
    "ants-syn": (("ants",), "pip install antspyx"),
    "ants-affine": (("ants",), "pip install antspyx"),
    "greedy": (("picsl_greedy", "SimpleITK"), "pip install picsl_greedy"),
    "dipy-syn": (("dipy",), "pip install dipy"),
}
KEYS = ["dice_before", "dice", "epe_before_mm", "epe_mm", "folding_percent", "reg_seconds",
        "process_seconds", "peak_rss_gb"]
REFERENCE = "ants-syn"


def missing(method: str) -> str | None:
    """The pip command for a peer whose package is not importable here, else None."""
    modules, command = REQUIRES.get(method, ((), ""))
    if any(importlib.util.find_spec(name) is None for name in modules):
        return command
    return None


def make_case(data: str, seed: int, path: Path, timeout: float) -> None:
    out = subprocess.run([sys.executable, str(HERE / "_one_case.py"), "--make-case", data,
                          str(seed), str(path)], check=False, capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"drawing the {data} case of seed {seed} failed:\n{out.stderr[-2000:]}")


def run_one(method: str, data: str, seed: int, case: Path, timeout: float) -> dict:
    env = dict(os.environ, DEEPREG_BENCH_LAUNCH=repr(time.time()))
    out = subprocess.run([sys.executable, str(HERE / "_one_case.py"), method, data, str(seed),
                          "0", "--case", str(case)], check=False, capture_output=True,
                         text=True, timeout=timeout, env=env)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(out.stderr[-2000:] or f"exit status {out.returncode}")
    return json.loads(lines[-1])


def summarize(rows: list[dict], methods: list[str]) -> dict:
    summary = {}
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        if sel:
            summary[method] = {k: statistics.median(r[k] for r in sel) for k in KEYS}
            summary[method]["cases"] = len(sel)
    reference = summary.get(REFERENCE)
    for values in summary.values():
        values["x_ants_process"] = (reference["process_seconds"] / values["process_seconds"]
                                    if reference else None)
        values["x_ants_reg"] = (reference["reg_seconds"] / values["reg_seconds"]
                                if reference else None)
    return summary


def table(data: str, summary: dict, rows: list[dict], skipped: dict, failures: list[dict],
          cases: int, machine: dict) -> str:
    def num(value, fmt):
        return "–" if value is None else format(value, fmt)

    first = rows[0]["seed"] if rows else "?"
    about = (f"Medians over {cases} case(s), seeds from {first} (never used in training); each "
             f"run in its own process. Machine: {machine['cpus']} CPU cores, load average "
             f"{machine['load_average']} at the start, {machine['date']}.")
    header = ("| method | Dice | EPE mm | folding % | reg s | process s | peak GB "
              "| speed-up on ANTs (process) |")
    lines = [f"### Peers on `{data}`: {DATA.get(data, data)}", "", about, "", header,
             "|---|---|---|---|---|---|---|---|"]
    if rows:
        before_dice = statistics.median(r["dice_before"] for r in rows)
        before_epe = statistics.median(r["epe_before_mm"] for r in rows)
        lines.append(f"| before (identity) | {before_dice:.3f} | {before_epe:.2f} | 0.000 | – | – "
                     f"| – | – |")
    for method, s in summary.items():
        note = "" if s["cases"] == cases else f" ({s['cases']}/{cases} cases)"
        lines.append(f"| {method}{note} | {s['dice']:.3f} | {s['epe_mm']:.2f} | "
                     f"{s['folding_percent']:.3f} | {s['reg_seconds']:.2f} | "
                     f"{s['process_seconds']:.2f} | {s['peak_rss_gb']:.2f} | "
                     f"{num(s['x_ants_process'], '.2f')} |")
    lines.append("")
    lines.append("reg s: the registration call alone; process s: from the process's start to the "
                 "moving labels warped (interpreter, imports, reading the pair, registration, "
                 "labels); peak GB: peak resident memory of that process. EPE: endpoint error of "
                 "the method's transform against the truth, inside the brain. Folding: voxels "
                 "with a non-positive Jacobian determinant.")
    for method, command in skipped.items():
        lines.append(f"- {method}: skipped, its package is missing (`{command}`)")
    for failure in failures:
        lines.append(f"- {failure['method']} seed {failure['seed']}: {failure['error']}")
    return "\n".join(lines) + "\n"


def run_data(data: str, args, methods: list[str]) -> None:
    skipped = {m: c for m in methods if (c := missing(m)) is not None}
    for method, command in skipped.items():
        print(f"{method}: skipped, its package is missing ({command})", file=sys.stderr)
    active = [m for m in methods if m not in skipped]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(),
               "python": platform.python_version(), "load_average": round(load[0], 2),
               "date": datetime.datetime.now().isoformat(timespec="minutes"),
               "threads_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS",
                                                          "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
                               if k in os.environ}}
    rows: list[dict] = []
    failures: list[dict] = []
    timed_out: set[str] = set()
    seeds = [args.seed + k for k in range(args.cases)]
    with tempfile.TemporaryDirectory(prefix="deepreg-peers-") as tmp:
        for seed in seeds:
            case = Path(tmp) / f"{data}_{seed}.npz"
            make_case(data, seed, case, args.timeout)
            for method in active:
                if method in timed_out:
                    continue
                try:
                    row = run_one(method, data, seed, case, args.timeout)
                except subprocess.TimeoutExpired:
                    timed_out.add(method)  # the next cases would time out too
                    failures.append({"method": method, "seed": seed,
                                     "error": f"timed out after {args.timeout:.0f} s"})
                    print(f"{method} seed {seed}: timed out", file=sys.stderr)
                    continue
                except (RuntimeError, json.JSONDecodeError) as exc:
                    error = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
                    failures.append({"method": method, "seed": seed, "error": error,
                                     "stderr": str(exc)})
                    print(f"{method} seed {seed} failed:\n{exc}", file=sys.stderr)
                    continue
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = summarize(rows, active)
    text = table(data, summary, rows, skipped, failures, args.cases, machine)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    record = {"data": data, "description": DATA.get(data, data), "seeds": seeds,
              "methods": methods, "machine": machine, "command": " ".join(sys.argv),
              "rows": rows, "failures": failures, "skipped": skipped, "summary": summary}
    (output / f"peers_{data}.json").write_text(json.dumps(record, indent=2))
    (output / f"peers_{data}.md").write_text(text)
    print("\n" + text, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["slice", "mni"], choices=sorted(DATA))
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds per case and method (default 3600)")
    parser.add_argument("--output-dir", default=str(HERE / "results"))
    args = parser.parse_args()
    if args.cases < 1:
        parser.error("--cases: expected at least 1")
    for data in args.data:
        run_data(data, args, args.methods)


if __name__ == "__main__":
    main()
