"""Run ONE registration case in its own process and print one JSON line (used by bench_3d.py).

    python bench/_one_case.py METHOD DATA SEED [REFINE_STEPS]

METHOD is a zoo model expression (e.g. ``deformable-3d``, ``affine-3d+deformable-3d``) or
``ants-syn`` / ``ants-affine`` (antspyx, its default ``SyN`` / ``Affine``). The case is drawn by
``deepreg_core.evaluation.make_case`` (ground truth known). Reports Dice, endpoint error (mm, in
the brain), folding, registration time, process time and peak resident memory.
"""

from __future__ import annotations

import json
import resource
import sys
import time

T_PROCESS = time.perf_counter()


def main(method: str, data: str, seed: int, refine_steps: int = 0) -> dict:
    import numpy as np
    import torch

    from deepreg_core import metrics
    from deepreg_core.evaluation import make_case

    shape = (99, 117, 95) if data == "mni" else (128, 128)
    fixed, moving, fl, ml, truth = make_case(data, shape, seed)
    spacing = np.asarray(fixed.spacing).reshape((-1,) + (1,) * fixed.ndim)
    if method.startswith("ants"):
        import ants

        f = ants.from_numpy(fixed.data.astype(np.float32), spacing=fixed.spacing)
        m = ants.from_numpy(moving.data.astype(np.float32), spacing=moving.spacing)
        start = time.perf_counter()
        reg = ants.registration(f, m, type_of_transform="SyN" if method == "ants-syn" else "Affine")
        seconds = time.perf_counter() - start
        ml_img = ants.from_numpy(ml.data.astype(np.float32), spacing=ml.spacing)
        warped_labels = ants.apply_transforms(f, ml_img, reg["fwdtransforms"],
                                              interpolator="nearestNeighbor").numpy()
        # ANTs' composite transform as our displacement (fixed voxel -> moving voxel): warp
        # images of the moving grid's index coordinates with it. Linear interpolation is exact
        # for a linear function, so this reads the transform itself; the coordinate images
        # extend 32 voxels beyond the moving grid so that points mapped outside it still read
        # their coordinate (no fake folds at the border).
        pad = 32
        index = np.meshgrid(*[np.arange(-pad, n + pad, dtype=np.float32) for n in shape],
                            indexing="ij")
        origin = tuple(-pad * s for s in moving.spacing)
        u = np.stack([
            ants.apply_transforms(f, ants.from_numpy(coord, spacing=moving.spacing, origin=origin),
                                  reg["fwdtransforms"], interpolator="linear").numpy()
            for coord in index
        ]) - np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape],
                                  indexing="ij"))
    else:
        from deepreg_core.inference import register

        start = time.perf_counter()
        result = register(fixed, moving, model=method, refine_steps=refine_steps, device="cpu",
                          seed=seed)
        seconds = time.perf_counter() - start
        u = result.displacement
        from deepreg_core.inference import apply_transform

        warped_labels = apply_transform(result, ml, mode="nearest").data
    mask = np.asarray(fl.data) > 0
    epe = np.linalg.norm((u - truth) * spacing, axis=0)[mask].mean()
    ut = torch.from_numpy(np.ascontiguousarray(u, dtype=np.float32))[None]
    dice = metrics.mean_dice(torch.from_numpy(fl.data.astype(np.int64)),
                             torch.from_numpy(np.asarray(warped_labels).round().astype(np.int64)))
    dice0 = metrics.mean_dice(torch.from_numpy(fl.data.astype(np.int64)),
                              torch.from_numpy(ml.data.astype(np.int64)))
    return {
        "method": method, "refine_steps": refine_steps, "seed": seed, "data": data,
        "dice_before": float(dice0), "dice": float(dice), "epe_mm": float(epe),
        "epe_before_mm": float(np.linalg.norm(truth * spacing, axis=0)[mask].mean()),
        "folding_percent": 100.0 * metrics.folding_fraction(ut),
        "reg_seconds": seconds, "process_seconds": time.perf_counter() - T_PROCESS,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(args[0], args[1], int(args[2]), int(args[3]) if len(args) > 3 else 0)))
