"""Does the global-to-local network's saliency gating pay off where the seed says it should?

    python bench/lesion_pairs.py [--cases 8] [--models deformable-2d global-local-2d]

Pairs of MNI152 slices (``make_case("slice")``, seeds 1000+) under a known deformation, where the
moving image also holds a lesion with no counterpart in the fixed image: a disc of radius 6-12
voxels inside the brain, filled with a constant (dark: missing tissue, or bright: a lesion). The
endpoint error (mm) is measured inside the brain *outside* the lesion (a 3-voxel margin), where
the registration should be unaffected, with the ``fast`` (networks only, as a user runs it) and
``auto`` presets.
Writes ``bench/results/lesion_pairs.json`` and prints a table of medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def lesion_case(seed: int):
    from deepreg_core.evaluation import SHAPES, make_case

    fixed, moving, fixed_labels, moving_labels, truth = make_case("slice", SHAPES["slice"], seed)
    rng = np.random.default_rng(seed)
    brain = np.argwhere(np.asarray(moving_labels.data) > 0)
    centre = brain[rng.integers(len(brain))]
    radius = rng.uniform(6, 12)
    grid = np.indices(moving.shape)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    data = np.array(moving.data, copy=True)
    data[distance <= radius] = 0.0 if rng.random() < 0.5 else float(np.percentile(data, 99.5))
    lesion_moving = moving.with_data(data)
    # the lesion in fixed coordinates: fixed voxels whose match x + u(x) lands in it
    points = grid.astype(np.float32) + truth
    landed = np.sqrt(sum((p - c) ** 2 for p, c in zip(points, centre))) <= radius + 3
    keep = (np.asarray(fixed_labels.data) > 0) & ~landed
    return fixed, lesion_moving, truth, keep


def main() -> None:
    from deepreg_core.inference import register

    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--models", nargs="*", default=["deformable-2d", "global-local-2d"])
    args = parser.parse_args()
    rows = []
    for k in range(args.cases):
        fixed, moving, truth, keep = lesion_case(1000 + k)
        spacing = np.asarray(fixed.spacing).reshape(-1, 1, 1)
        before = float(np.linalg.norm(truth * spacing, axis=0)[keep].mean())
        for model in args.models:
            for preset in ("fast", "auto"):
                result = register(fixed, moving, model=model, preset=preset, device="cpu",
                                  qa=False, seed=1000 + k)
                error = np.linalg.norm((result.displacement - truth) * spacing, axis=0)
                rows.append({"seed": 1000 + k, "model": model, "preset": preset,
                             "epe_outside_mm": float(error[keep].mean()),
                             "epe_before_mm": before, "seconds": result.metrics["seconds"]})
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for model in args.models:
        for preset in ("fast", "auto"):
            sel = [r for r in rows if r["model"] == model and r["preset"] == preset]
            summary[f"{model} {preset}"] = {
                key: statistics.median(r[key] for r in sel)
                for key in ("epe_before_mm", "epe_outside_mm", "seconds")}
    (HERE / "results" / "lesion_pairs.json").write_text(
        json.dumps({"rows": rows, "summary": summary}, indent=1))
    print("\n| model, preset | EPE before mm | EPE outside the lesion mm | s |\n|---|---|---|---|")
    for key, s in summary.items():
        print(f"| {key} | {s['epe_before_mm']:.2f} | {s['epe_outside_mm']:.2f} | "
              f"{s['seconds']:.2f} |")


if __name__ == "__main__":
    main()
