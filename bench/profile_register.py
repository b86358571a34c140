"""Where the time of one `deepreg-core register` goes, phase by phase, in a fresh process.

    python bench/profile_register.py [--data mni slice mni1mm] [--preset auto] [--seed 1000]

For each data kind, an evaluation case (``deepreg_core.evaluation.make_case``, seeds disjoint
from training) is written to NIfTI files first; then a child process does what the CLI does and
times each phase: imports, reading, resampling and normalisation, each network, each refinement
level, the quality maps and metrics, writing the outputs. The breakdown goes to
``bench/results/profile_<data>_<preset>.json`` and a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
T0 = time.perf_counter()


def child(fixed_path: str, moving_path: str, preset: str, out: str) -> dict:
    """Run in the child: the CLI's work with a clock at each phase boundary."""
    phases: dict[str, float] = {}
    mark = [time.perf_counter()]

    def tick(name: str) -> None:
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - mark[0]
        mark[0] = now

    mark[0] = T0
    import torch  # noqa: F401

    from deepreg_core.events import Finished, Progress, Started
    from deepreg_core.inference import register_iter
    from deepreg_core.interop import save_displacement_nifti
    from deepreg_core.io import read_image, write_image
    tick("imports")
    fixed, moving = read_image(fixed_path), read_image(moving_path)
    tick("read")
    current = "resample + normalise"
    for event in register_iter(fixed, moving, model="auto", preset=preset, device="cpu"):
        if isinstance(event, Started):
            tick("model load")
            current = "resample + normalise"
        elif isinstance(event, Progress):
            name = event.message.split(" (")[0] if event.message.startswith("refine") else \
                event.message.split(" ")[0]
            if name == "done":
                tick("quality maps + metrics")
            else:
                tick(current if name == current else f"{name}")
                current = name
        elif isinstance(event, Finished):
            result = event.result
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_image(result.warped, out_dir / "warped.nii.gz", reference=fixed)
    save_displacement_nifti(result.displacement, fixed, out_dir / "displacement.nii.gz")
    write_image(fixed.with_data(result.jacobian), out_dir / "jacobian.nii.gz", reference=fixed)
    write_image(fixed.with_data(result.saliency), out_dir / "saliency.nii.gz", reference=fixed)
    tick("write outputs")
    return {"phases": phases, "total": time.perf_counter() - T0, "shape": list(fixed.shape),
            "metrics": result.metrics}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", nargs="*", default=["mni", "slice", "mni1mm"])
    parser.add_argument("--preset", default="auto")
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    from deepreg_core.evaluation import SHAPES, make_case
    from deepreg_core.io import write_image

    for data in args.data:
        with tempfile.TemporaryDirectory() as tmp:
            fixed, moving, *_ = make_case(data, SHAPES[data], args.seed)
            write_image(fixed, f"{tmp}/f.nii.gz")
            write_image(moving, f"{tmp}/m.nii.gz")
            run = subprocess.run([sys.executable, __file__, "--child", f"{tmp}/f.nii.gz",
                                  f"{tmp}/m.nii.gz", args.preset, f"{tmp}/out"],
                                 capture_output=True, text=True, check=True)
        report = json.loads(run.stdout.strip().splitlines()[-1])
        report.update(data=data, preset=args.preset, seed=args.seed)
        path = HERE / "results" / f"profile_{data}_{args.preset}.json"
        path.write_text(json.dumps(report, indent=1))
        total = report["total"]
        print(f"\n{data} {tuple(report['shape'])}, preset {args.preset}: {total:.2f} s in all")
        print("| phase | s | % |\n|---|---|---|")
        for name, seconds in report["phases"].items():
            print(f"| {name} | {seconds:.2f} | {100 * seconds / total:.0f} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:6])))
    else:
        main()
