"""Real scans the models never saw, under known deformations: is the network better than nothing?

    python bench/real_scans.py [--presets fast auto] [--cases 2] [--models auto]

The zoo is trained on MNI152 and synthetic label maps only. This bench takes the real,
single-subject scans that installed packages ship (none is MNI152, none enters training):

- ``anatomical``: nibabel's T1 (33 x 41 x 25, 2 mm);
- ``epi``: nibabel's ``example4d`` first volume (an EPI, 128 x 96 x 24, 2 x 2 x 2.2 mm);
- ``b0``: dipy's ``aniso_vox`` (a diffusion b0, 58 x 58 x 24, 4 x 4 x 5 mm);
- ``t1-slice`` (2D): dipy's real T1 coronal slice.

Each is the fixed image; the moving image is the scan pulled through a random smooth deformation
and a small affine of the evaluation magnitudes (``evaluation.make_case("mni")``'s, in voxels),
or with ``--affine DEGREES`` a pure random affine (for the affine models), seeds from 1000 (disjoint from training's). Reported per scan and preset (medians over
``--cases``): endpoint error (mm) inside the head (Otsu mask of the fixed scan) before and after,
NCC before and after, folding, seconds. Results: ``bench/results/real_scans.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def scans() -> dict[str, tuple[np.ndarray, tuple[float, ...]]]:
    from deepreg_core.evaluation import load_real_scan

    names = {"anatomical": "nib-t1", "epi": "nib-epi", "b0": "dipy-b0", "t1-slice": "t1slice"}
    out = {}
    for name, kind in names.items():
        image, spacing = load_real_scan(kind)
        out[name] = (np.asarray(image, np.float32), spacing)
    return out


def make_pair(volume: np.ndarray, spacing, seed: int, affine_rotation: float | None = None):
    from deepreg_core.evaluation import transform_case
    from deepreg_core.image import Image

    if affine_rotation is None:  # the evaluation cases' deformation and small affine
        moving, _, forward = transform_case(volume, seed)
    else:  # a pure affine: rotations up to affine_rotation, shifts up to 10 % of the grid
        moving, _, forward = transform_case(volume, seed, deformable=False,
                                            rotation=affine_rotation, scale=0.1, shear=0.03,
                                            translation=0.1 * min(volume.shape))
    affine = np.diag([*map(float, spacing), 1.0])
    return Image(volume, affine=affine), Image(moving, affine=affine), forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["fast", "auto"])
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--model", default="auto")
    parser.add_argument("--scans", nargs="+", default=["anatomical", "epi", "b0", "t1-slice"])
    parser.add_argument("--affine", type=float, default=None, metavar="DEGREES",
                        help="pure random affines (rotations up to DEGREES per plane, scale 0.1, "
                             "shear 0.03, shifts up to 10 %% of the grid) instead of the "
                             "deformation cases: for the affine models")
    parser.add_argument("--output", default=str(HERE / "results" / "real_scans.json"))
    args = parser.parse_args()
    import torch
    from skimage.filters import threshold_otsu

    from deepreg_core import losses
    from deepreg_core.inference import register

    torch.manual_seed(0)
    report: dict = {"seed": args.seed, "cases": args.cases, "threads": torch.get_num_threads(),
                    "model": args.model, "affine_rotation": args.affine}
    for name, (volume, spacing) in scans().items():
        if name not in args.scans:
            continue
        volume = volume / max(float(np.percentile(volume, 99.5)), 1e-6)
        mask = volume > threshold_otsu(volume)
        rows: dict[str, list[dict]] = {p: [] for p in args.presets}
        before = []
        for i in range(args.cases):
            fixed, moving, truth = make_pair(volume, spacing, args.seed + i, args.affine)
            sp = np.asarray(spacing, np.float64).reshape((-1,) + (1,) * volume.ndim)
            epe0 = float(np.linalg.norm(truth * sp, axis=0)[mask].mean())
            f_t = torch.from_numpy(np.asarray(fixed.data))[None, None]
            m_t = torch.from_numpy(np.asarray(moving.data))[None, None]
            before.append({"epe_mm": epe0, "ncc": float(losses.ncc(f_t, m_t))})
            for preset in args.presets:
                r = register(fixed, moving, model=args.model, preset=preset, device="cpu")
                err = np.linalg.norm((r.displacement - truth) * sp, axis=0)[mask].mean()
                rows[preset].append({"epe_mm": float(err), "ncc": r.metrics["ncc_after"],
                                     "folding_percent": 100 * r.folding_fraction,
                                     "seconds": r.metrics["seconds"],
                                     "model": r.metrics.get("model", args.model)})
        entry = {"shape": list(volume.shape), "spacing": [float(s) for s in spacing],
                 "before": {k: statistics.median(b[k] for b in before) for k in before[0]}}
        for preset, rs in rows.items():
            entry[preset] = {k: statistics.median(r[k] for r in rs) for k in
                             ("epe_mm", "ncc", "folding_percent", "seconds")}
        report[name] = entry
        print(f"{name:10s} {tuple(volume.shape)} before EPE {entry['before']['epe_mm']:.2f} mm "
              f"NCC {entry['before']['ncc']:.3f} | " + " | ".join(
                  f"{p} EPE {entry[p]['epe_mm']:.2f} NCC {entry[p]['ncc']:.3f} "
                  f"{entry[p]['seconds']:.2f} s" for p in args.presets), flush=True)
    Path(args.output).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
