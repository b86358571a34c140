"""Run ONE registration case in its own process and print one JSON line.

    python bench/_one_case.py METHOD DATA SEED [REFINE_STEPS] [--case CASE.npz]
    python bench/_one_case.py --make-case DATA SEED CASE.npz

METHOD is one of

- a zoo model expression (``deformable-3d``, ``affine-3d+deformable-3d``), run with exactly
  REFINE_STEPS refinement steps (the form ``bench_3d.py`` uses);
- ``deepreg:fast`` / ``deepreg:auto`` / ``deepreg:accurate``: ``register(model="auto",
  preset=...)``, the network `auto` picks for the pair's dimensionality and the named preset;
- ``ants-syn`` / ``ants-affine``: antspyx, its default ``SyN`` / ``Affine``;
- ``greedy``: PICSL Greedy (``picsl_greedy``), its documented recipe: affine (``-a -dof 12
  -ia-image-centers -m WNCC 2x2x2 -n 100x50x10``), then deformable (``-m WNCC 2x2x2
  -n 100x50x10 -it affine``);
- ``dipy-syn``: DIPY, its tutorials' pipeline: centre of mass → translation → rigid → affine
  (mutual information), then ``SymmetricDiffeomorphicRegistration`` with ``CCMetric``.

DATA is ``mni`` (2 mm, 99×117×95), ``mni1mm`` (1 mm, 197×233×189), ``slice`` (2D, 128×128) or
``synthetic``; the case is ``deepreg_core.evaluation.make_case(DATA, shape, SEED)`` (ground truth
known). With ``--case`` the arrays are read from a file written by ``--make-case`` (what
``bench/peers.py`` does, so that drawing the case costs the measured process neither time nor
memory); without it the case is drawn in this process first.

Reported: Dice of the moving labels warped with nearest neighbour, endpoint error (mm) inside the
brain (fixed labels > 0) against the truth, folding (% of voxels with a non-positive Jacobian of
the method's displacement), ``reg_seconds`` (the registration call alone), ``process_seconds``
(from the start of this process to the moving labels warped: interpreter, imports, reading the
case, registration; with ``--case`` only, otherwise the case drawing is included as before) and
``peak_rss_gb`` (peak resident memory at that same point). Reading a peer's transform back as a
displacement and the metrics come after both measurements.

Every method's displacement has one meaning: fixed voxel ``x`` ↦ moving voxel ``x + u(x)`` in
array axis order (``warp(moving, u) ≈ fixed``, as the truth). For the peers it is read off their
own resampler: images of the moving grid's index coordinates are resampled onto the fixed grid
through the method's full transform (affine and warp) with linear interpolation, which is exact
for a linear function; the coordinate images extend 32 voxels beyond the moving grid so that
points mapped outside it still read their coordinate (no fake folds at the border).
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time

T_PROCESS = time.perf_counter()
# bench/peers.py passes the wall-clock time at which it launched this process, so that the
# interpreter's start-up counts too; run by hand, the clock starts at this module.
T_LAUNCH = float(os.environ.get("DEEPREG_BENCH_LAUNCH", "nan"))

SHAPES = {"mni": (99, 117, 95), "mni1mm": (197, 233, 189), "slice": (128, 128),
          "t1slice": (256, 256), "nib-t1": (33, 41, 25), "nib-epi": (128, 96, 24),
          "dipy-b0": (58, 58, 24), "synthetic": (128, 128)}
PRESETS = ("fast", "auto", "accurate")
PAD = 32  # voxels the coordinate images extend beyond the moving grid


def _elapsed() -> float:
    if not math.isnan(T_LAUNCH):
        return time.time() - T_LAUNCH
    return time.perf_counter() - T_PROCESS


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


class _Quiet:
    """Send file descriptor 1 to 2 while a peer runs (Greedy and ITK print from C++), so that
    this process's stdout carries only the JSON line."""

    def __enter__(self):
        sys.stdout.flush()
        self.saved = os.dup(1)
        os.dup2(2, 1)
        return self

    def __exit__(self, *exc):
        sys.stdout.flush()
        os.dup2(self.saved, 1)
        os.close(self.saved)
        return False


# --------------------------------------------------------------------------------- the cases


def make_case_file(data: str, seed: int, path: str) -> None:
    """Draw the case with ``make_case`` and write its arrays to ``path`` (.npz)."""
    import numpy as np

    from deepreg_core.evaluation import make_case

    fixed, moving, fl, ml, truth = make_case(data, SHAPES[data], seed)
    np.savez(path, fixed=fixed.data.astype(np.float32), moving=moving.data.astype(np.float32),
             fixed_labels=fl.data.astype(np.int32), moving_labels=ml.data.astype(np.int32),
             truth=truth.astype(np.float32), spacing=np.asarray(fixed.spacing, dtype=np.float64))


class Case:
    """The arrays of one case (``truth`` is only read for scoring, after the measurements)."""

    def __init__(self, data: str, seed: int, path: str | None):
        import numpy as np

        if path is not None:
            self._file = np.load(path)
            self.fixed = self._file["fixed"]
            self.moving = self._file["moving"]
            self.fixed_labels = self._file["fixed_labels"]
            self.moving_labels = self._file["moving_labels"]
            self.spacing = tuple(float(s) for s in self._file["spacing"])
            self._truth = None
        else:
            from deepreg_core.evaluation import make_case

            fixed, moving, fl, ml, truth = make_case(data, SHAPES[data], seed)
            self._file = None
            self.fixed, self.moving = fixed.data.astype(np.float32), moving.data.astype(np.float32)
            self.fixed_labels, self.moving_labels = fl.data, ml.data
            self.spacing = tuple(float(s) for s in fixed.spacing)
            self._truth = truth

    @property
    def truth(self):
        return self._truth if self._file is None else self._file["truth"]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.fixed.shape)


def _coordinate_images(shape, dtype="float32"):
    """Index coordinates of the moving grid, padded by ``PAD`` voxels: list of ``ndim`` arrays."""
    import numpy as np

    return np.meshgrid(*[np.arange(-PAD, n + PAD, dtype=dtype) for n in shape], indexing="ij")


def _minus_identity(coords, shape):
    import numpy as np

    identity = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    return np.stack(coords).astype(np.float32) - np.stack(identity)


# --------------------------------------------------------------------------------- the methods
# Each returns (reg_seconds, warped moving labels on the fixed grid, a function that reads the
# method's transform back as a displacement (ndim, *shape) in fixed voxels).


def run_ants(case: Case, kind: str):
    import ants
    import numpy as np

    f = ants.from_numpy(case.fixed, spacing=case.spacing)
    m = ants.from_numpy(case.moving, spacing=case.spacing)
    with _Quiet():
        start = time.perf_counter()
        reg = ants.registration(f, m, type_of_transform=kind)
        seconds = time.perf_counter() - start
        ml = ants.from_numpy(case.moving_labels.astype(np.float32), spacing=case.spacing)
        labels = ants.apply_transforms(f, ml, reg["fwdtransforms"],
                                       interpolator="nearestNeighbor").numpy()

    def displacement():
        # ants.from_numpy keeps the array order: axis 0 is ITK's x, so no transposes here
        origin = tuple(-PAD * s for s in case.spacing)
        with _Quiet():
            coords = [
                ants.apply_transforms(f, ants.from_numpy(c, spacing=case.spacing, origin=origin),
                                      reg["fwdtransforms"], interpolator="linear").numpy()
                for c in _coordinate_images(case.shape)
            ]
        return _minus_identity(coords, case.shape)

    return seconds, labels, displacement


def run_greedy(case: Case):
    import numpy as np
    import SimpleITK as sitk
    from picsl_greedy import Greedy2D, Greedy3D

    ndim = len(case.shape)

    def image(array, origin=None):
        # SimpleITK reads arrays in (z, y, x) order: transpose so that ITK's x is array axis 0
        out = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array, np.float32).T))
        out.SetSpacing(case.spacing)
        if origin is not None:
            out.SetOrigin(origin)
        return out

    def array(img):
        return sitk.GetArrayFromImage(img).T

    window = "x".join(["2"] * ndim)
    g = Greedy3D() if ndim == 3 else Greedy2D()
    fixed, moving = image(case.fixed), image(case.moving)
    with _Quiet():
        start = time.perf_counter()
        g.execute(f"-d {ndim} -i fixed moving -a -dof 12 -ia-image-centers -m WNCC {window} "
                  "-n 100x50x10 -o affine", fixed=fixed, moving=moving, affine=None)
        g.execute(f"-d {ndim} -i fixed moving -it affine -m WNCC {window} -n 100x50x10 "
                  "-o warp", warp=None)
        seconds = time.perf_counter() - start
        # the reslice chain is the one Greedy documents: warp, then affine (moving ← fixed)
        g.execute(f"-d {ndim} -rf fixed -ri NN -rm labels labels_out -r warp affine",
                  labels=image(case.moving_labels), labels_out=None)
        labels = array(g["labels_out"])

    def displacement():
        origin = tuple(-PAD * s for s in case.spacing)
        names = {f"c{k}": image(c, origin) for k, c in enumerate(_coordinate_images(case.shape))}
        pairs = " ".join(f"-rm c{k} o{k}" for k in range(ndim))
        outputs = {f"o{k}": None for k in range(ndim)}
        with _Quiet():
            g.execute(f"-d {ndim} -rf fixed -ri LINEAR {pairs} -r warp affine", **names, **outputs)
        return _minus_identity([array(g[f"o{k}"]) for k in range(ndim)], case.shape)

    return seconds, labels, displacement


def run_dipy(case: Case):
    import numpy as np
    from dipy.align import transforms
    from dipy.align.imaffine import (
        AffineRegistration,
        MutualInformationMetric,
        transform_centers_of_mass,
    )
    from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
    from dipy.align.metrics import CCMetric

    ndim = len(case.shape)
    grid = np.diag([*case.spacing, 1.0])  # voxel (array order) -> world, mm
    static, moving = case.fixed.astype(np.float64), case.moving.astype(np.float64)
    kinds = [getattr(transforms, f"{name}Transform{ndim}D")()
             for name in ("Translation", "Rigid", "Affine")]
    # the DIPY tutorials' settings: affine_registration_3d, syn_registration_3d/_2d
    if ndim == 3:
        metric, level_iters = CCMetric(3), [10, 10, 5]
    else:
        metric, level_iters = CCMetric(2, sigma_diff=3.0, radius=4), [100, 50, 25]
    with _Quiet():
        start = time.perf_counter()
        current = transform_centers_of_mass(static, grid, moving, grid).affine
        affreg = AffineRegistration(metric=MutualInformationMetric(nbins=32,
                                                                   sampling_proportion=None),
                                    level_iters=[10000, 1000, 100], sigmas=[3.0, 1.0, 0.0],
                                    factors=[4, 2, 1], verbosity=0)
        for transform in kinds:
            current = affreg.optimize(static, moving, transform, None, static_grid2world=grid,
                                      moving_grid2world=grid, starting_affine=current).affine
        sdr = SymmetricDiffeomorphicRegistration(metric, level_iters=level_iters)
        mapping = sdr.optimize(static, moving, static_grid2world=grid, moving_grid2world=grid,
                               prealign=current)
        seconds = time.perf_counter() - start
        # DiffeomorphicMap.transform pulls a moving-space image onto the static grid
        labels = mapping.transform(case.moving_labels.astype(np.float64),
                                   interpolation="nearest")

    def displacement():
        padded = grid.copy()
        padded[:ndim, ndim] = [-PAD * s for s in case.spacing]
        world2grid = np.linalg.inv(padded)
        coords = [mapping.transform(c, interpolation="linear", image_world2grid=world2grid)
                  for c in _coordinate_images(case.shape, dtype="float64")]
        return _minus_identity(coords, case.shape)

    return seconds, labels, displacement


def run_deepreg(case: Case, model: str, refine_steps: int | None, preset: str | None, seed: int):
    from deepreg_core.image import Image
    from deepreg_core.inference import apply_transform, register

    fixed = Image.from_array(case.fixed, spacing=case.spacing)
    moving = Image.from_array(case.moving, spacing=case.spacing)
    if preset is not None:
        # the preset as a user runs it, without the quality maps (Jacobian, saliency) that the
        # peers do not compute either
        kwargs = {"model": "auto", "preset": preset, "qa": False}
    else:
        # an explicit model and budget: with 0 the network's own field (no fallback)
        kwargs = {"model": model, "refine_steps": refine_steps,
                  "fallback": False if refine_steps == 0 else None}
    start = time.perf_counter()
    result = register(fixed, moving, device="cpu", seed=seed, **kwargs)
    seconds = time.perf_counter() - start
    labels = apply_transform(result, Image.from_array(case.moving_labels, spacing=case.spacing),
                             mode="nearest").data
    return seconds, labels, lambda: result.displacement


# --------------------------------------------------------------------------------- one case


def main(method: str, data: str, seed: int, refine_steps: int = 0,
         case_path: str | None = None) -> dict:
    case = Case(data, seed, case_path)
    if method.startswith("ants-"):
        kind = {"ants-syn": "SyN", "ants-affine": "Affine"}[method]
        seconds, labels, read_u = run_ants(case, kind)
    elif method == "greedy":
        seconds, labels, read_u = run_greedy(case)
    elif method == "dipy-syn":
        seconds, labels, read_u = run_dipy(case)
    elif method.startswith("deepreg:"):
        preset = method.split(":", 1)[1]
        if preset not in PRESETS:
            raise ValueError(f"method {method!r}: expected deepreg:{'|'.join(PRESETS)}")
        seconds, labels, read_u = run_deepreg(case, "auto", None, preset, seed)
    else:
        seconds, labels, read_u = run_deepreg(case, method, refine_steps, None, seed)
    process_seconds, peak = _elapsed(), _peak_rss_gb()

    # ---- scoring (not measured)
    import numpy as np
    import torch

    from deepreg_core import metrics

    u = np.asarray(read_u(), dtype=np.float32)
    truth = np.asarray(case.truth, dtype=np.float32)
    ndim = len(case.shape)
    spacing = np.asarray(case.spacing).reshape((-1,) + (1,) * ndim)
    mask = case.fixed_labels > 0
    fl = torch.from_numpy(case.fixed_labels.astype(np.int64))
    dice = metrics.mean_dice(fl, torch.from_numpy(np.asarray(labels).round().astype(np.int64)))
    dice0 = metrics.mean_dice(fl, torch.from_numpy(case.moving_labels.astype(np.int64)))
    ut = torch.from_numpy(np.ascontiguousarray(u))[None]
    return {
        "method": method, "refine_steps": refine_steps, "seed": seed, "data": data,
        "dice_before": float(dice0), "dice": float(dice),
        "epe_mm": float(np.linalg.norm((u - truth) * spacing, axis=0)[mask].mean()),
        "epe_before_mm": float(np.linalg.norm(truth * spacing, axis=0)[mask].mean()),
        "folding_percent": 100.0 * metrics.folding_fraction(ut),
        "reg_seconds": seconds, "process_seconds": process_seconds, "peak_rss_gb": peak,
        "case_from_file": case_path is not None,
    }


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--make-case":
        make_case_file(args[1], int(args[2]), args[3])
        sys.exit(0)
    path = None
    if "--case" in args:
        k = args.index("--case")
        path = args[k + 1]
        del args[k:k + 2]
    print(json.dumps(main(args[0], args[1], int(args[2]), int(args[3]) if len(args) > 3 else 0,
                          path)))
