"""Two different brains: dipy's real T1 coronal slice against MNI152 coronal slices.

    python bench/inter_subject_2d.py [--presets fast auto accurate] [--no-ants]

The synthetic-deformation benches register a scan to itself under a known transform. Here the
fixed image is dipy's T1 coronal slice (one real subject, 256 x 256, taken as 1 mm) and the
moving images are coronal slices of nilearn's 1 mm MNI152 template (another brain, an average
one, at another scale and position) at five positions around the slice's level, padded to
256 x 256. There is no true transform; the measure is the Dice of the tissue classes (three
multi-Otsu classes of each image, computed on each image separately) after warping the moving
classes, medians over the five pairs. ANTs SyN (antspyx, ``type_of_transform="SyN"``: affine then
SyN) runs on the same pairs when installed. Results: ``bench/results/inter_subject_2d.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
POSITIONS = (100, 110, 120, 130, 140)  # coronal planes of the 1 mm template (its axis 1)
SIZE = 256


def tissue_classes(image: np.ndarray) -> np.ndarray:
    """Background plus three multi-Otsu intensity classes."""
    from skimage.filters import threshold_multiotsu

    return np.digitize(image, threshold_multiotsu(image, classes=4)).astype(np.int32)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the foreground classes of ``b``."""
    scores = []
    for c in range(1, int(b.max()) + 1):
        total = np.sum(a == c) + np.sum(b == c)
        scores.append(2.0 * np.sum((a == c) & (b == c)) / max(total, 1))
    return float(np.mean(scores))


def pairs() -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    from nilearn import datasets

    from deepreg_core.evaluation import load_real_scan

    fixed = load_real_scan("t1slice")[0].astype(np.float32)
    fixed /= max(float(np.percentile(fixed, 99.5)), 1e-6)
    volume = np.asarray(datasets.load_mni152_template(resolution=1).dataobj, np.float32)
    moving = []
    for y in POSITIONS:
        plane = np.rot90(volume[:, y, :])  # the dipy slice's layout: superior up, (z, x)
        plane = plane / max(float(np.percentile(plane, 99.5)), 1e-6)
        canvas = np.zeros((SIZE, SIZE), np.float32)
        h, w = plane.shape
        canvas[(SIZE - h) // 2:(SIZE - h) // 2 + h, (SIZE - w) // 2:(SIZE - w) // 2 + w] = plane
        moving.append((y, canvas))
    return fixed, moving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["fast", "auto", "accurate"])
    parser.add_argument("--no-ants", action="store_true", help="leave ANTs SyN out")
    parser.add_argument("--output", default=str(HERE / "results" / "inter_subject_2d.json"))
    args = parser.parse_args()
    import torch

    from deepreg_core.image import Image
    from deepreg_core.inference import apply_transform, register

    torch.manual_seed(0)
    try:
        import ants
    except ImportError:
        ants = None
    fixed, moving = pairs()
    fixed_classes = tissue_classes(fixed)
    fixed_image = Image.from_array(fixed, spacing=(1.0, 1.0))
    rows: dict[str, list[dict]] = {"before": []}
    for y, image in moving:
        moving_classes = tissue_classes(image)
        rows["before"].append({"position": y, "dice": dice(moving_classes, fixed_classes)})
        labels = Image.from_array(moving_classes, spacing=(1.0, 1.0))
        for preset in args.presets:
            start = time.perf_counter()
            result = register(fixed_image, Image.from_array(image, spacing=(1.0, 1.0)),
                              preset=preset, device="cpu", qa=False, seed=0)
            seconds = time.perf_counter() - start
            warped = np.asarray(apply_transform(result, labels, mode="nearest").data)
            rows.setdefault(preset, []).append({"position": y, "dice": dice(warped, fixed_classes),
                                                "seconds": seconds, "model": result.model_name})
        if ants is not None and not args.no_ants:
            f, m = ants.from_numpy(fixed), ants.from_numpy(image)
            start = time.perf_counter()
            reg = ants.registration(f, m, type_of_transform="SyN")
            seconds = time.perf_counter() - start
            warped = ants.apply_transforms(f, ants.from_numpy(moving_classes.astype(np.float32)),
                                           reg["fwdtransforms"],
                                           interpolator="nearestNeighbor").numpy()
            rows.setdefault("ants-syn", []).append({"position": y, "seconds": seconds,
                                                    "dice": dice(warped.astype(np.int32),
                                                                 fixed_classes)})
        print(f"y={y}: " + ", ".join(f"{k} {v[-1]['dice']:.3f}" for k, v in rows.items()),
              flush=True)
    summary = {k: {"dice": statistics.median(r["dice"] for r in v),
                   "seconds": statistics.median(r.get("seconds", 0.0) for r in v)}
               for k, v in rows.items()}
    Path(args.output).write_text(json.dumps({"positions": POSITIONS, "summary": summary,
                                             "rows": rows}, indent=1))
    print("| method | Dice (median of 5) | s |\n|---|---|---|")
    for k, v in summary.items():
        print(f"| {k} | {v['dice']:.3f} | {v['seconds']:.2f} |")


if __name__ == "__main__":
    main()
