"""Evaluate the shipped zoo models on cases never used in training, and fill their model cards.

    python bench/evaluate_zoo.py [NAME ...] [--cases 3]

- 2D models: MNI152 slices in random orientations (``slice``), axial MNI152 2 mm slices and
  synthetic pairs (seeds 1000+, never drawn in training) under random deformations (and affines
  for the MNI kinds).
- 3D models: MNI152 at 2 mm (99 x 117 x 95) under random deformations and affines (seeds 1000+).
- affine-3d also: nibabel's ``anatomical.nii`` -> ``reoriented_anat_moved.nii`` (a known rigid
  transform, rotations 0.1/0.2/0.3 rad and translation 3/4/5 mm): mean error of the recovered
  transform in mm inside the head.
With the ``fast`` preset (the network alone) and the default ``auto`` preset. Results: bench/results/zoo_<name>.json and
the evaluation section of each card.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from publish_model import EVAL_END, EVAL_START, ZOO  # noqa: E402


def nibabel_rigid_case(model: str, refine_steps: int) -> dict:
    import nibabel as nib
    from nibabel.eulerangles import euler2mat

    from deepreg_core.inference import register
    from deepreg_core.io import read_image

    data = Path(nib.__file__).parent / "tests" / "data"
    fixed = read_image(data / "anatomical.nii", labels=False)
    moving = read_image(data / "reoriented_anat_moved.nii", labels=False)
    extra = np.eye(4)
    extra[:3, :3] = euler2mat(0.1, 0.2, 0.3)
    extra[:3, 3] = [3, 4, 5]
    truth = np.linalg.inv(fixed.affine) @ extra @ fixed.affine  # fixed voxel -> fixed-grid voxel
    result = register(fixed, moving, model=model, refine_steps=refine_steps,
                      fallback=False if refine_steps == 0 else None)  # 0: the network, raw
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in fixed.shape], indexing="ij"))
    flat = grid.reshape(3, -1).astype(np.float64)
    true_u = (truth[:3, :3] @ flat + truth[:3, 3:]) - flat
    spacing = np.asarray(fixed.spacing)[:, None]
    mask = (fixed.data > np.percentile(fixed.data, 60)).reshape(-1)
    err = np.linalg.norm((result.displacement.reshape(3, -1) - true_u) * spacing, axis=0)[mask]
    before = np.linalg.norm(true_u * spacing, axis=0)[mask]
    return {"error_mm": float(err.mean()), "before_mm": float(before.mean()),
            "seconds": result.metrics["seconds"], "refine_steps": refine_steps}


# Pure random affines inside the affine recipes' training range (25 degrees per plane, scale
# 0.15, shifts up to a sixth of the grid): what "a random affine within the training range is
# recovered to under 1 voxel" is measured on. In voxels of the evaluation grid (2 mm).
AFFINE_CASES = dict(deformable=False, affine=True, rotation=20.0, scale=0.1, shear=0.03,
                    translation=10.0)


def identity_case(model: str, ndim: int) -> dict:
    """An identical pair: how far from the identity the network's transform is (voxels)."""
    from deepreg_core.evaluation import make_case
    from deepreg_core.inference import register

    data, shape = ("mni", (99, 117, 95)) if ndim == 3 else ("slice", (128, 128))
    fixed = make_case(data, shape, 1000)[0]
    result = register(fixed, fixed, model=model, refine_steps=0, fallback=False)
    return {"max_displacement_voxels": float(np.abs(result.displacement).max())}


def evaluate(name: str, cases: int) -> dict:
    from deepreg_core import zoo
    from deepreg_core.evaluation import evaluate_model

    cfg = zoo.get(name).config()
    report = {}
    datasets = ["slice", "mni", "synthetic"] if cfg.model.ndim == 2 else ["mni"]
    model = name
    # the network alone; for a deformable model also after the zoo's affine network (what `fast`
    # runs by default, inference.Preset.affine_start); then the default `auto`
    # ("network only": the raw field, fallback off; the presets' rows as a user gets them)
    runs = [("network only", "fast", False)]
    if cfg.model.kind != "affine":
        runs.append((f"affine-{cfg.model.ndim}d then the network (fast)", "fast", None))
    runs.append(("default (auto)", "auto", None))  # an affine model's refinement stays affine
    for data in datasets:
        for label, preset, affine_start in runs:
            key = f"{data}, {label}"
            shape = tuple(cfg.data.shape) if data == "synthetic" else None
            res = evaluate_model(model, data=data, cases=cases, refine_steps=None, preset=preset,
                                 shape=shape, affine_start=affine_start,
                                 fallback=False if label == "network only" else None)
            report[key] = res["summary"]
            print(name, key, json.dumps(res["summary"]), flush=True)
    if cfg.model.kind == "affine":
        data = "mni" if cfg.model.ndim == 3 else "slice"
        res = evaluate_model(model, data=data, cases=max(cases, 5), refine_steps=0,
                             case_options=AFFINE_CASES, fallback=False)
        report[f"{data}, pure affines up to 20 deg, network only"] = res["summary"]
        worst = max(r["epe_mm"] for r in res["cases"]) / 2.0  # 2 mm voxels
        report["affine cases"] = {"median_epe_voxels": res["summary"]["epe_mm"] / 2.0,
                                  "worst_epe_voxels": worst, "cases": len(res["cases"])}
        report["identical pair"] = identity_case(model, cfg.model.ndim)
        print(name, json.dumps(report["affine cases"]), json.dumps(report["identical pair"]),
              flush=True)
    if name == "affine-3d":
        for steps in (0, 50):
            report[f"nibabel rigid pair, {steps} refinement steps"] = nibabel_rigid_case(name, steps)
            print(name, "nibabel", steps, report[f"nibabel rigid pair, {steps} refinement steps"],
                  flush=True)
    return report


def to_markdown(name: str, report: dict, cases: int) -> str:
    lines = [f"Medians over {cases} cases (seeds 1000+), CPU, `python bench/evaluate_zoo.py {name}`"
             + ".",
             "", "| data | Dice before | Dice after | EPE before mm | EPE after mm | folding % | s |",
             "|---|---|---|---|---|---|---|"]
    for key, s in report.items():
        if "dice" in s:
            lines.append(f"| {key} | {s['dice_before']:.3f} | {s['dice']:.3f} | "
                         f"{s['epe_before_mm']:.2f} | {s['epe_mm']:.2f} | "
                         f"{s['folding_percent']:.3f} | {s['seconds']:.2f} |")
    if "affine cases" in report:
        a, i = report["affine cases"], report["identical pair"]
        lines += ["", f"Pure random affines (rotations up to 20 degrees per plane, scale 0.1, shifts "
                      f"up to 10 voxels; {a['cases']} cases), network only: endpoint error median "
                      f"{a['median_epe_voxels']:.2f}, worst {a['worst_epe_voxels']:.2f} voxels "
                      "(2 mm). An identical pair: largest displacement "
                      f"{i['max_displacement_voxels']:.1e} voxels."]
    for key, r in report.items():
        if key.startswith("nibabel rigid pair"):
            lines += ["", f"nibabel's rigid pair (`anatomical.nii` -> `reoriented_anat_moved.nii`, "
                          f"{r['refine_steps']} refinement steps): mean transform error "
                          f"{r['error_mm']:.2f} mm in the head (before {r['before_mm']:.2f} mm), "
                          f"{r['seconds']:.2f} s."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*")
    parser.add_argument("--cases", type=int, default=3)
    args = parser.parse_args()
    names = args.names or sorted(p.name for p in ZOO.iterdir() if p.is_dir())
    (HERE / "results").mkdir(exist_ok=True)
    for name in names:
        report = evaluate(name, args.cases)
        (HERE / "results" / f"zoo_{name}.json").write_text(json.dumps(report, indent=2))
        card = ZOO / name / "card.md"
        text = card.read_text()
        head, rest = text.split(EVAL_START)
        tail = rest.split(EVAL_END)[1]
        tmp = card.with_suffix(".tmp")
        tmp.write_text(f"{head}{EVAL_START}\n{to_markdown(name, report, args.cases)}\n{EVAL_END}{tail}")
        tmp.replace(card)


if __name__ == "__main__":
    main()
