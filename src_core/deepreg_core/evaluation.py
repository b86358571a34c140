"""Evaluate a registration model on pairs whose ground truth is known.

Cases are drawn with seeds that training never uses (training draws from its own seed stream; the
default evaluation seeds start at 1000), so the numbers measure generalisation. Used by
``deepreg-core evaluate`` and by the scripts in ``bench/`` that fill the model cards.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch

from deepreg_core.image import Image

MNI_SPACING_MM = 2.0
# Default shapes of the data kinds (array order): nilearn's MNI152 at 2 mm and at 1 mm, and the
# 2D slices of ``"slice"``.
SHAPES = {"mni": (99, 117, 95), "mni1mm": (197, 233, 189), "slice": (128, 128),
          "t1slice": (256, 256), "nib-t1": (33, 41, 25), "nib-epi": (128, 96, 24),
          "dipy-b0": (58, 58, 24)}
# Real single-subject scans that installed packages ship (none is MNI152, none enters training):
# data kind -> (package, file under its data folder, 4D volume index, multi-Otsu classes)
REAL_SCANS = {
    "t1slice": ("dipy", "data/files/t1_coronal_slice.npy", None, 4),
    "nib-t1": ("nibabel", "tests/data/anatomical.nii", None, 3),
    "nib-epi": ("nibabel", "tests/data/example4d.nii.gz", 0, 3),
    "dipy-b0": ("dipy", "data/files/aniso_vox.nii.gz", None, 3),
}
# The 2 mm cases' transform magnitudes (voxels where a length): deformation up to 2.5 voxels
# (5 mm) std, shifts up to 3 voxels (6 mm), rotations up to 6°, scales 5 %, shears 0.02.
_MNI_OPTIONS = dict(deformable=True, affine=True, velocity_std=2.5, rotation=6.0, scale=0.05,
                    shear=0.02, translation=3.0)


def make_case(data: str, shape: Sequence[int], seed: int, **options):
    """One evaluation pair: ``(fixed Image, moving Image, fixed labels, moving labels, truth)``.

    ``data`` is one of

    - ``"synthetic"``: SynthMorph-style label maps, random contrasts, spacing 1;
    - ``"mni"``: nilearn's MNI152 at 2 mm (shape ``(99, 117, 95)``) under a random smooth
      deformation and a small affine, spacing 2 mm;
    - ``"mni1mm"``: the real 1 mm MNI152 (shape ``(197, 233, 189)``) under a transform of the same
      physical size as ``"mni"`` (deformation std and shifts doubled in voxels; the default
      smoothness ``min(shape) / 4`` doubles with the shape), spacing 1 mm;
    - ``"slice"``: 2D MNI152 slices (2 mm template), a random orientation, position and layout
      per seed (:func:`deepreg_core.synth.random_mni_slice`), with the ``"mni"`` magnitudes in
      voxels, spacing 2 mm;
    - the real scans of :data:`REAL_SCANS`: ``"t1slice"`` (dipy's T1 coronal slice, 256 x 256,
      1 mm), ``"nib-t1"`` (nibabel's T1, 33 x 41 x 25, 2 mm), ``"nib-epi"`` (nibabel's EPI,
      128 x 96 x 24, 2 x 2 x 2.2 mm), ``"dipy-b0"`` (dipy's diffusion b0, 58 x 58 x 24,
      4 x 4 x 5 mm), under the ``"mni"`` magnitudes in voxels (:func:`transform_case`; their
      own shape and spacing, ``shape`` is not used).

    ``shape`` should be :data:`SHAPES` ``[data]`` for the MNI kinds (other shapes resample the
    template, and the spacing no longer matches the anatomy). ``truth`` is the ground-truth
    displacement ``(ndim, *shape)`` in voxels (``warp(moving, truth) ≈ fixed``).
    """
    from deepreg_core import synth

    if data == "mni":
        opts = dict(_MNI_OPTIONS)
        opts.update(options)
        pair = synth.mni_pair(tuple(shape), seed, **opts)
        spacing = (MNI_SPACING_MM,) * len(shape)
    elif data == "mni1mm":
        opts = dict(_MNI_OPTIONS, velocity_std=2 * _MNI_OPTIONS["velocity_std"],
                    translation=2 * _MNI_OPTIONS["translation"], resolution=1)
        opts.update(options)
        pair = synth.mni_pair(tuple(shape), seed, **opts)
        spacing = (1.0,) * len(shape)
    elif data == "slice":
        if len(shape) != 2:
            raise ValueError(f"shape: 'slice' cases are 2D, got {tuple(shape)}.")
        opts = dict(_MNI_OPTIONS, orientation="random")
        opts.update(options)
        pair = synth.mni_pair(tuple(shape), seed, **opts)
        spacing = (MNI_SPACING_MM,) * 2
    elif data in REAL_SCANS:
        return _real_scan_case(data, seed, **options)
    elif data == "synthetic":
        opts = dict(deformable=True, affine=False)
        opts.update(options)
        pair = synth.synthetic_pair(tuple(shape), seed, **opts)
        spacing = (1.0,) * len(shape)
    else:
        raise ValueError(
            f"data: expected 'synthetic', 'mni', 'mni1mm', 'slice' or one of the real scans "
            f"{', '.join(map(repr, REAL_SCANS))}, got {data!r}."
        )

    def image(t: torch.Tensor, dtype=np.float32) -> Image:
        return Image.from_array(t[0, 0].numpy().astype(dtype), spacing=spacing)

    return (image(pair.fixed), image(pair.moving), image(pair.fixed_labels, np.int32),
            image(pair.moving_labels, np.int32), pair.displacement[0].numpy())


def load_real_scan(data: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """The array (the file's dtype, scaling applied) and spacing (mm, array order) of a scan of
    :data:`REAL_SCANS`."""
    import importlib
    from pathlib import Path

    if data not in REAL_SCANS:
        raise ValueError(f"data: expected one of the real scans {', '.join(REAL_SCANS)}, got "
                         f"{data!r}.")
    package, name, volume, _ = REAL_SCANS[data]
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise ValueError(f"data {data!r}: needs {package}'s test data (pip install {package})."
                         ) from error
    path = Path(module.__file__).parent / name
    if path.suffix == ".npy":
        return np.load(path), (1.0, 1.0)
    import nibabel as nib

    loaded = nib.load(path)
    image = np.asarray(loaded.dataobj)
    if volume is not None:
        image = image[..., volume]
    return image, tuple(float(z) for z in loaded.header.get_zooms()[:3])


def _real_scan_case(data: str, seed: int, **options):
    """A real scan of :data:`REAL_SCANS` under the ``"mni"`` transform magnitudes in voxels;
    labels: its multi-Otsu intensity classes (background, then darker to brighter tissue),
    warped with the image; spacing from the file's header (1 mm for dipy's T1 slice)."""
    from skimage.filters import threshold_multiotsu

    image, spacing = load_real_scan(data)
    image = image.astype(np.float32) / max(float(np.percentile(image, 99.5)), 1e-6)
    classes = REAL_SCANS[data][3]
    labels = np.digitize(image, threshold_multiotsu(image, classes=classes)).astype(np.int32)
    moving, moving_labels, forward = transform_case(image, seed, labels=labels, **options)

    def as_image(a: np.ndarray, dtype=np.float32) -> Image:
        return Image.from_array(np.asarray(a).astype(dtype), spacing=spacing)

    return (as_image(image), as_image(moving), as_image(labels, np.int32),
            as_image(moving_labels, np.int32), forward)


def transform_case(image: np.ndarray, seed: int, labels: np.ndarray | None = None,
                   **options) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """An array under a known random transform: an evaluation case made from any image.

    The transform is the ``"mni"`` cases' (a smooth deformation, then a small affine; magnitudes
    in voxels), with ``options`` overriding any of ``deformable``, ``affine``, ``velocity_std``,
    ``rotation``, ``scale``, ``shear``, ``translation``; it is drawn from ``seed`` alone.

    Returns
    -------
    moving : np.ndarray
        ``image`` warped (linear, zeros outside).
    moving_labels : np.ndarray or None
        ``labels`` warped the same way (nearest), when given.
    forward : np.ndarray
        The true displacement in voxels, shape ``(ndim, *image.shape)``: ``fixed(x)`` matches
        ``moving(x + forward(x))``, the convention of every registration result.
    """
    from deepreg_core import spatial
    from deepreg_core.synth.pairs import ground_truth
    from deepreg_core.synth.transforms import random_affine, random_velocity

    unknown = set(options) - set(_MNI_OPTIONS)
    if unknown:
        raise ValueError(f"transform options: expected some of {sorted(_MNI_OPTIONS)}, got "
                         f"{sorted(unknown)}.")
    opts = dict(_MNI_OPTIONS)
    opts.update(options)
    shape = image.shape
    g = torch.Generator().manual_seed(seed)
    velocity = random_velocity(shape, g, opts["velocity_std"]) if opts["deformable"] else None
    matrix = random_affine(shape, g, rotation=opts["rotation"], scale=opts["scale"],
                           shear=opts["shear"], translation=opts["translation"]) \
        if opts["affine"] else None
    forward, inverse = ground_truth(shape, velocity, matrix, 7)
    moving = spatial.warp(torch.from_numpy(np.asarray(image, np.float32))[None, None], inverse,
                          padding="zeros")[0, 0].numpy()
    moving_labels = None
    if labels is not None:
        moving_labels = spatial.warp(
            torch.from_numpy(np.asarray(labels).astype(np.float32))[None, None], inverse,
            mode="nearest", padding="zeros")[0, 0].numpy()
    return moving, moving_labels, forward[0].numpy()


def case_metrics(result, fixed_labels: Image, truth: np.ndarray) -> dict[str, float]:
    """Dice after, endpoint error (mm) inside the fixed labels' foreground, folding, time."""
    from deepreg_core import metrics

    spacing = np.asarray(result.fixed.spacing).reshape((-1,) + (1,) * result.fixed.ndim)
    mask = np.asarray(fixed_labels.data) > 0
    error = np.linalg.norm((result.displacement - truth) * spacing, axis=0)
    moved = result.warped_labels.data if result.warped_labels is not None else None
    values = {
        "epe_mm": float(error[mask].mean()),
        "epe_before_mm": float(np.linalg.norm(truth * spacing, axis=0)[mask].mean()),
        "folding_percent": 100.0 * result.folding_fraction,
        "seconds": result.metrics["seconds"],
    }
    if moved is not None:
        ref = torch.from_numpy(np.asarray(fixed_labels.data).astype(np.int64))
        values["dice"] = float(metrics.mean_dice(ref, torch.from_numpy(moved.astype(np.int64))))
        values["dice_before"] = result.metrics.get("dice_before", float("nan"))
    return values


def evaluate_model(model, *, data: str = "synthetic", cases: int = 5, seed: int = 1000,
                   shape: Sequence[int] | None = None, refine_steps: int | None = 0,
                   preset: str = "auto", device: str = "auto",
                   case_options: dict | None = None, affine_start: bool | None = None,
                   fallback: bool | None = None) -> dict:
    """Register ``cases`` pairs with known ground truth; per-case numbers and medians.

    ``refine_steps`` is a fixed refinement budget (0: the networks alone, with the preset's
    fallback unless ``fallback=False``); ``None`` lets
    ``preset`` (``"auto"``, ``"fast"``, ``"accurate"``) decide, as the CLI does without flags.
    ``case_options`` override the cases' transform magnitudes (:func:`make_case` options, e.g.
    ``{"deformable": False, "rotation": 20.0}`` for pure affines). ``affine_start`` is
    :func:`~deepreg_core.inference.register`'s (None: the preset's; False: a deformable model's
    networks exactly, without the zoo's affine network before them); ``fallback`` too (False:
    the networks' field even when it matches worse than its start, as the cards' "network only"
    rows measure).

    Returns ``{"model", "data", "cases": [...], "summary": {metric: median}}``.
    """
    from deepreg_core import zoo
    from deepreg_core.inference import register

    if cases < 1:
        raise ValueError(f"cases: expected at least 1, got {cases}.")
    if shape is None:
        names = model if isinstance(model, str) else None
        if data == "mni":
            ndim = zoo.get(names.split("+")[-1]).config().model.ndim if names else 3
            shape = (99, 117, 95) if ndim == 3 else (117, 99)
        elif data in ("mni1mm", "slice") or data in REAL_SCANS:
            shape = SHAPES[data]
        else:
            shape = tuple(zoo.get(names.split("+")[-1]).config().data.shape)
    rows = []
    for k in range(cases):
        fixed, moving, fixed_labels, moving_labels, truth = make_case(data, shape, seed + k,
                                                                      **(case_options or {}))
        start = time.perf_counter()
        result = register(fixed, moving, model=model, refine_steps=refine_steps, preset=preset,
                          device=device, fixed_labels=fixed_labels, moving_labels=moving_labels,
                          seed=seed + k, affine_start=affine_start, fallback=fallback)
        row = case_metrics(result, fixed_labels, truth)
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    keys = rows[0].keys()
    summary = {key: statistics.median(r[key] for r in rows) for key in keys}
    return {"model": str(model), "data": data, "shape": list(shape), "refine_steps": refine_steps,
            "preset": preset if refine_steps is None else None, "case_options": case_options,
            "affine_start": affine_start, "fallback": fallback,
            "cases": rows,
            "summary": summary}
