"""Point-pair registration: rigid, similarity, affine (least squares) and thin-plate splines.

Points are corresponding landmarks in **world coordinates** (mm, the images' affines place them).
A fitted transform maps a point of the fixed image to the corresponding point of the moving image
(the direction of every transform in this package: fixed → moving, pull-back warping).

- :func:`fit_transform` fits one of :data:`KINDS` and returns a :class:`PointTransform` (callable
  on ``(N, ndim)`` points, with its homogeneous ``matrix`` when it is linear);
- :func:`pair_points` matches two point sets by order or by a shared label, with clear messages
  when counts differ;
- :func:`displacement_on_grid` turns a transform into the package's displacement on the fixed
  grid (what :func:`deepreg_core.inference.register` starts from with ``model="landmarks-..."``).

Rigid and similarity use Umeyama's closed form (no reflection); affine is the least-squares
solution of the homogeneous system; the thin-plate spline (kernel ``r² log r`` in 2D, ``r`` in
3D) interpolates its landmarks exactly, plus an affine part.

Examples
--------
>>> fixed = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
>>> t = fit_transform(fixed, fixed + [2.0, -1.0], "rigid")
>>> np.round(t(np.array([[5.0, 5.0]])), 6).tolist()
[[7.0, 4.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deepreg_core.image import Image

KINDS = ("rigid", "similarity", "affine", "tps")
"""The transform models, from the stiffest to the most flexible."""


def _as_points(points: object, name: str, ndim: int | None = None) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] not in (2, 3) or (ndim and array.shape[1] != ndim):
        want = f"(N, {ndim})" if ndim else "(N, 2) or (N, 3)"
        raise ValueError(f"{name}: expected an array {want} of point coordinates, got shape "
                         f"{array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite coordinates, got NaN or infinite values.")
    return array


def minimum_points(kind: str, ndim: int) -> int:
    """How many non-degenerate pairs ``kind`` needs in ``ndim`` dimensions.

    >>> minimum_points("rigid", 3), minimum_points("affine", 2)
    (3, 3)
    """
    if kind not in KINDS:
        raise ValueError(f"landmark model: expected one of {', '.join(KINDS)}, got {kind!r}.")
    return {"rigid": ndim if ndim == 3 else 2, "similarity": ndim if ndim == 3 else 2}.get(
        kind, ndim + 1)


def pair_points(fixed: object, moving: object, fixed_labels: Sequence[object] | None = None,
                moving_labels: Sequence[object] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Corresponding ``(fixed, moving)`` arrays: by order, or by shared labels when given.

    With labels, pairs are the labels present in both sets (in the fixed set's order); a label
    used twice in one set is refused. Without labels, the counts must be equal.
    """
    f = _as_points(fixed, "fixed points")
    m = _as_points(moving, "moving points", f.shape[1])
    if fixed_labels is None or moving_labels is None:
        if len(f) != len(m):
            raise ValueError(
                f"landmarks: {len(f)} fixed and {len(m)} moving points; pairs are matched by "
                "order, so the counts must be equal. Delete the extra points, or give both sets "
                "a 'label' property to pair them by label."
            )
        return f, m
    fl, ml = [str(v) for v in fixed_labels], [str(v) for v in moving_labels]
    if len(fl) != len(f) or len(ml) != len(m):
        raise ValueError("landmarks: expected one label per point in each set.")
    for name, labels in (("fixed", fl), ("moving", ml)):
        repeated = sorted({v for v in labels if labels.count(v) > 1})
        if repeated:
            raise ValueError(f"landmarks: {name} label(s) {', '.join(repeated)} used more than "
                             "once; each label names one pair.")
    shared = [v for v in fl if v in ml]
    if not shared:
        raise ValueError("landmarks: no label is shared by the fixed and the moving points.")
    return (np.stack([f[fl.index(v)] for v in shared]),
            np.stack([m[ml.index(v)] for v in shared]))


@dataclass(frozen=True)
class PointTransform:
    """A fitted point transform, fixed world → moving world.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    matrix : ndarray ``(ndim + 1, ndim + 1)``
        The linear part (for ``tps``: its affine part).
    centres, weights : ndarray or None
        The spline's control points ``(N, ndim)`` and kernel weights ``(N, ndim)`` (``tps`` only).
    residual_mm : float
        Root-mean-square distance between the mapped fixed points and the moving points.
    """

    kind: str
    matrix: np.ndarray
    centres: np.ndarray | None = None
    weights: np.ndarray | None = None
    residual_mm: float = 0.0

    @property
    def ndim(self) -> int:
        """2 or 3."""
        return self.matrix.shape[0] - 1

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, ndim)`` fixed-space points to the moving space."""
        p = _as_points(points, "points", self.ndim)
        out = p @ self.matrix[:-1, :-1].T + self.matrix[:-1, -1]
        if self.centres is not None and self.weights is not None:
            out = out + _kernel(p, self.centres) @ self.weights
        return out


def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The thin-plate radial basis between point sets: ``r² log r`` (2D), ``r`` (3D)."""
    r = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    if a.shape[1] == 3:
        return r
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, r * r * np.log(np.where(r > 0, r, 1.0)), 0.0)


def _check_spread(points: np.ndarray, kind: str) -> None:
    """Refuse point sets that do not determine the transform (collinear, coplanar, repeated)."""
    ndim = points.shape[1]
    centred = points - points.mean(axis=0)
    rank = np.linalg.matrix_rank(centred, tol=1e-6 * max(1.0, float(np.abs(centred).max())))
    need = ndim if kind in ("affine", "tps") else ndim - 1
    if rank < need:
        shape = {1: "collinear", 0: "all at one place"}.get(int(rank), "coplanar")
        raise ValueError(
            f"landmarks: the fixed points are {shape}, so a {kind} transform is not determined "
            f"(it needs points spanning {ndim}D). Add points off that "
            f"{'line' if rank == 1 else 'plane'}."
        )


def fit_transform(fixed: object, moving: object, kind: str = "affine") -> PointTransform:
    """Fit ``kind`` so that it maps the fixed points onto the moving points.

    Parameters
    ----------
    fixed, moving : array ``(N, ndim)``
        Corresponding points in world coordinates (row ``i`` of each is one pair).
    kind : {"rigid", "similarity", "affine", "tps"}

    Raises
    ------
    ValueError
        Unequal counts, fewer pairs than ``kind`` needs, or degenerate (collinear) points.
    """
    f = _as_points(fixed, "fixed points")
    m = _as_points(moving, "moving points", f.shape[1])
    ndim = f.shape[1]
    need = minimum_points(kind, ndim)
    if len(f) != len(m):
        raise ValueError(f"landmarks: {len(f)} fixed and {len(m)} moving points; a pair needs "
                         "one of each.")
    if len(f) < need:
        raise ValueError(f"landmarks: a {ndim}D {kind} transform needs at least {need} point "
                         f"pairs, got {len(f)}. Add pairs, or choose a stiffer model "
                         f"({', '.join(KINDS[: KINDS.index(kind)]) or 'none'}).")
    _check_spread(f, kind)
    matrix = np.eye(ndim + 1)
    centres = weights = None
    if kind in ("rigid", "similarity"):
        fc, mc = f.mean(axis=0), m.mean(axis=0)
        a, b = f - fc, m - mc
        u, s, vt = np.linalg.svd(b.T @ a / len(f))
        d = np.eye(ndim)
        d[-1, -1] = np.sign(np.linalg.det(u @ vt)) or 1.0  # a rotation, never a reflection
        rotation = u @ d @ vt
        scale = 1.0
        if kind == "similarity":
            scale = float(np.trace(np.diag(s) @ d) / max((a * a).sum() / len(f), 1e-12))
        matrix[:ndim, :ndim] = scale * rotation
        matrix[:ndim, ndim] = mc - scale * rotation @ fc
    elif kind == "affine":
        homogeneous = np.hstack([f, np.ones((len(f), 1))])
        solution, *_ = np.linalg.lstsq(homogeneous, m, rcond=None)
        matrix[:ndim, :] = solution.T
    else:  # tps: [K P; P^T 0] [w; a] = [m; 0]
        n = len(f)
        P = np.hstack([f, np.ones((n, 1))])
        system = np.zeros((n + ndim + 1, n + ndim + 1))
        system[:n, :n] = _kernel(f, f)
        system[:n, n:] = P
        system[n:, :n] = P.T
        rhs = np.zeros((n + ndim + 1, ndim))
        rhs[:n] = m
        solution = np.linalg.solve(system, rhs)
        weights, affine = solution[:n], solution[n:]
        matrix[:ndim, :] = affine.T
        centres = f.copy()
    fitted = PointTransform(kind, matrix, centres, weights)
    residual = float(np.sqrt(((fitted(f) - m) ** 2).sum(axis=1).mean()))
    return PointTransform(kind, matrix, centres, weights, residual)


def displacement_on_grid(transform: PointTransform, fixed: Image,
                         chunk: int = 1 << 18) -> np.ndarray:
    """The transform as a displacement ``(ndim, *fixed.shape)`` in fixed voxels.

    For voxel ``x`` of the fixed grid: world ``p = A x``, moving world ``q = T(p)``, and
    ``u(x) = A⁻¹ q - x``: the position in the moving image resampled onto the fixed grid, the
    convention of :class:`~deepreg_core.inference.RegistrationResult`. Computed in chunks of
    ``chunk`` voxels (a spline's kernel matrix is voxels × landmarks).
    """
    if transform.ndim != fixed.ndim:
        raise ValueError(f"landmarks: a {transform.ndim}D transform for a {fixed.ndim}D image.")
    shape = fixed.shape
    index = np.indices(shape, dtype=np.float64).reshape(fixed.ndim, -1).T
    out = np.empty_like(index)
    for start in range(0, len(index), chunk):
        block = index[start:start + chunk]
        out[start:start + chunk] = fixed.world_to_index(transform(fixed.index_to_world(block)))
    return (out - index).T.reshape(fixed.ndim, *shape).astype(np.float32)
