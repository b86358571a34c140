"""Registration quality metrics: label overlap, landmark error, Jacobians and folding.

Displacements are ``(B, ndim, *spatial)`` in voxels of the fixed grid, or in physical units
when a ``spacing`` is given (``docs/conventions.md``). Label maps are integer tensors,
``(B, 1, *spatial)`` or ``(*spatial)``. Device and dtype come from the inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deepreg_core._diff import axis_difference, check_mask, check_scheme
from deepreg_core._validate import (
    check_displacement,
    check_label_tensor,
    check_points,
    check_spacing,
)

__all__ = [
    "dice_per_label",
    "endpoint_error",
    "folding_fraction",
    "jacobian_and_worst",
    "jacobian_determinant",
    "mean_dice",
    "std_log_jacobian",
    "target_registration_error",
]

JACOBIAN_SCHEMES = ("central", "forward", "backward", "all")


def dice_per_label(
    a: torch.Tensor, b: torch.Tensor, labels: Iterable[int] | None = None
) -> dict[int, float]:
    """Dice overlap ``2 |A_l & B_l| / (|A_l| + |B_l|)`` for each label ``l``.

    Parameters
    ----------
    a, b : torch.Tensor
        Integer label maps of the same shape, ``(B, 1, *spatial)`` or ``(*spatial)``; all batch
        items are pooled.
    labels : iterable of int, optional
        Labels to score. Default: every label present in ``a`` or ``b`` except background 0.
        A requested label absent from both maps scores ``nan`` (not 1, not 0).

    Returns
    -------
    dict of int to float
        Dice in ``[0, 1]`` per label, in ascending label order.

    Examples
    --------
    >>> a = torch.tensor([[0, 1, 1], [2, 2, 0]])
    >>> b = torch.tensor([[0, 1, 0], [2, 2, 2]])
    >>> {k: round(v, 3) for k, v in dice_per_label(a, b).items()}
    {1: 0.667, 2: 0.8}
    """
    a = check_label_tensor(a, "a")
    b = check_label_tensor(b, "b")
    if a.shape != b.shape:
        raise ValueError(
            f"a and b: expected label maps of the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}. Resample one onto the other's grid with nearest interpolation."
        )
    # One pass for all labels: map the values to compact indices, then count per label in a,
    # in b, and where a and b agree (bincount), instead of two passes over the volume per label.
    flat_a, flat_b = a.reshape(-1).long(), b.reshape(-1).long()
    values, inverse = torch.unique(torch.cat([flat_a, flat_b]), return_inverse=True)
    index_a, index_b = inverse[: flat_a.numel()], inverse[flat_a.numel():]
    n = values.numel()
    count_a = torch.bincount(index_a, minlength=n)
    count_b = torch.bincount(index_b, minlength=n)
    overlap = torch.bincount(index_a[index_a == index_b], minlength=n)
    totals = {int(v): (int(t), int(o)) for v, t, o in
              zip(values.tolist(), (count_a + count_b).tolist(), overlap.tolist())}
    if labels is None:
        wanted = [v for v in totals if v != 0]
    else:
        wanted = sorted({int(v) for v in labels})
    scores: dict[int, float] = {}
    for label in wanted:
        total, common = totals.get(label, (0, 0))
        scores[label] = 2.0 * common / total if total > 0 else math.nan
    return scores


def mean_dice(a: torch.Tensor, b: torch.Tensor, labels: Iterable[int] | None = None) -> float:
    """Mean of :func:`dice_per_label` over the labels that are present (``nan`` ones skipped).

    Returns ``nan`` when no label is present in either map.

    Examples
    --------
    >>> a = torch.tensor([[0, 1, 1], [2, 2, 0]])
    >>> round(mean_dice(a, a), 3)
    1.0
    """
    values = [v for v in dice_per_label(a, b, labels).values() if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def target_registration_error(
    points_a: torch.Tensor, points_b: torch.Tensor, spacing: Sequence[float] | None = None
) -> torch.Tensor:
    """Euclidean distance between corresponding landmarks, in mm.

    Parameters
    ----------
    points_a, points_b : torch.Tensor
        Float voxel indices ``(N, ndim)`` in array order, row ``i`` of one matching row ``i``
        of the other (e.g. fixed landmarks mapped by the registration, and the true ones).
    spacing : sequence of float, optional
        Voxel size per axis in mm; differences are multiplied by it. Default 1 (voxels).

    Returns
    -------
    torch.Tensor
        ``(N,)`` distances.

    Examples
    --------
    >>> target_registration_error(torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]), (3.0, 4.0))
    tensor([5.])
    """
    points_a = check_points(points_a, "points_a")
    points_b = check_points(points_b, "points_b")
    if points_a.shape != points_b.shape:
        raise ValueError(
            f"points_a and points_b: expected the same shape (N, ndim), got "
            f"{tuple(points_a.shape)} and {tuple(points_b.shape)}."
        )
    h = torch.tensor(check_spacing(spacing, points_a.shape[1]), dtype=points_a.dtype)
    diff = (points_a - points_b) * h.to(points_a.device)
    return torch.linalg.vector_norm(diff, dim=1)


SLAB_VOXELS = 1 << 19
"""Voxels per slab of the one-pass Jacobian (bounds its temporaries to a few tens of MB)."""


def _columns(x: torch.Tensor, d: int, h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Column ``d`` of ``I + grad x`` by forward and by backward differences (two views).

    Both are windows on one padded array of the ``n - 1`` differences, whose ends repeat the
    first and last difference: the one-sided fallbacks of
    :func:`~deepreg_core._diff.axis_difference`.
    """
    dim = d + 2
    n = x.shape[dim]
    if n < 2:
        column = torch.zeros_like(x)
        column[:, d] = 1.0
        return column, column
    step = x.narrow(dim, 1, n - 1) - x.narrow(dim, 0, n - 1)
    padded = torch.cat([step.narrow(dim, 0, 1), step, step.narrow(dim, n - 2, 1)], dim=dim)
    if h != 1.0:
        padded /= h
    padded[:, d] += 1.0
    return padded.narrow(dim, 1, n), padded.narrow(dim, 0, n)


def _cross(b: torch.Tensor, c: torch.Tensor) -> list[torch.Tensor]:
    """Components of ``b x c`` for ``(B, 3, ...)`` columns."""
    return [b[:, i] * c[:, j] - b[:, j] * c[:, i] for i, j in ((1, 2), (2, 0), (0, 1))]


def _dot(a: torch.Tensor, v: list[torch.Tensor]) -> torch.Tensor:
    return a[:, 0] * v[0] + a[:, 1] * v[1] + a[:, 2] * v[2]


def _det2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]


def _det(columns: Sequence[torch.Tensor]) -> torch.Tensor:
    """Determinant ``(B, *spatial)`` of the matrix whose columns are ``(B, ndim, *spatial)``."""
    if len(columns) == 2:
        return _det2(*columns)
    return _dot(columns[0], _cross(columns[1], columns[2]))


def _jacobian_pass(
    u: torch.Tensor, h: Sequence[float], *, central: bool, worst: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Central and worst-case Jacobian determinants in one pass over slabs of the first axis.

    Column ``d`` of ``I + grad u`` is formed once per slab with forward (``F_d``) and backward
    (``B_d``) differences; the central column is ``(F_d + B_d) / 2`` (this equals the central
    stencil inside and its one-sided fallback at the borders). The worst case is the minimum of
    the ``2**ndim`` one-sided determinants; in 3D the four cross products ``b x c`` are shared by
    both choices of the first column. Each slab carries a one-voxel halo along the first axis,
    so the result equals the whole-volume stencils exactly; slabs keep the temporaries small
    enough to stay in cache.
    """
    ndim = u.dim() - 2
    n = u.shape[2]
    plane = u.shape[0] * math.prod(u.shape[3:])
    rows = max(1, SLAB_VOXELS // max(plane, 1))
    shape = (u.shape[0], 1, *u.shape[2:])
    out_central = u.new_empty(shape) if central else None
    out_worst = u.new_empty(shape) if worst else None
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        low, high = max(start - 1, 0), min(stop + 1, n)
        ext = u[:, :, low:high]
        inner = ext[:, :, start - low : stop - low]
        first = [col.narrow(2, start - low, stop - start) for col in _columns(ext, 0, h[0])]
        sides = [first] + [list(_columns(inner, d, h[d])) for d in range(1, ndim)]
        if out_central is not None:
            out_central[:, 0, start:stop] = _det([0.5 * (f + b) for f, b in sides])
        if out_worst is not None:
            if ndim == 2:
                dets = (_det2(a, b) for a in sides[0] for b in sides[1])
            else:
                crosses = [_cross(b, c) for b in sides[1] for c in sides[2]]
                dets = (_dot(a, bc) for a in sides[0] for bc in crosses)
            low_det = next(dets)
            for det in dets:
                torch.minimum(low_det, det, out=low_det)
            out_worst[:, 0, start:stop] = low_det
    return out_central, out_worst


def jacobian_determinant(
    u: torch.Tensor, *, spacing: Sequence[float] | None = None, scheme: str = "central"
) -> torch.Tensor:
    """Jacobian determinant ``det(I + grad u)`` of the transform ``phi(x) = x + u(x)``.

    Parameters
    ----------
    u : torch.Tensor
        Displacement ``(B, ndim, *spatial)``, in voxels, or in the units of ``spacing``.
    spacing : sequence of float, optional
        Voxel size per axis; derivatives are divided by it. Give it only when ``u`` is in the
        same physical units (for a field in voxels the determinant needs no spacing).
    scheme : {"central", "forward", "backward", "all"}
        Finite-difference stencil (one-sided at the borders, see ``deepreg_core._diff``).
        ``"all"`` returns, per voxel, the minimum over all ``2**ndim`` combinations of forward
        or backward differences per axis: it catches folds that central differences miss,
        such as neighbouring voxels swapping places.

    Returns
    -------
    torch.Tensor
        ``(B, 1, *spatial)``; ``<= 0`` marks folding. Differentiable for the one-stencil
        schemes; ``"all"`` is computed slab by slab without gradients.

    Examples
    --------
    >>> y, x = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    >>> u = torch.stack([y, x])[None]  # phi(x) = 2 x
    >>> float(jacobian_determinant(u).mean())
    4.0
    """
    u = check_displacement(u, "u")
    check_scheme(scheme, JACOBIAN_SCHEMES)
    ndim = u.dim() - 2
    h = check_spacing(spacing, ndim)
    if scheme == "all":
        with torch.no_grad():
            lowest = _jacobian_pass(u, h, central=False, worst=True)[1]
        assert lowest is not None  # asked for (worst=True)
        return lowest
    columns = [axis_difference(u, d, scheme=scheme, spacing=h[d]) for d in range(ndim)]
    eye = torch.eye(ndim, dtype=u.dtype, device=u.device).view(ndim, ndim, *[1] * ndim)
    return _det([col + eye[d] for d, col in enumerate(columns)]).unsqueeze(1)


def jacobian_and_worst(
    u: torch.Tensor, *, spacing: Sequence[float] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(central, worst)`` determinants of :func:`jacobian_determinant` in one pass, no grad.

    What a quality report needs (the map to show and the folds to count) for about the cost of
    the worst case alone.

    Examples
    --------
    >>> central, worst = jacobian_and_worst(torch.zeros(1, 3, 4, 4, 4))
    >>> float(central.min()), float(worst.max())
    (1.0, 1.0)
    """
    u = check_displacement(u, "u")
    h = check_spacing(spacing, u.dim() - 2)
    with torch.no_grad():
        return _jacobian_pass(u, h, central=True, worst=True)  # type: ignore[return-value]


@dataclass(frozen=True)
class FieldQuality:
    """The quality maps of a displacement field (NumPy, on its grid).

    Attributes
    ----------
    jacobian : ndarray ``spatial``, float32
        Jacobian determinant of ``x + u(x)`` (central differences).
    folds : ndarray ``spatial``, uint8
        1 where any one-sided stencil gives ``det <= 0`` (a fold), else 0.
    folding_fraction : float
        The mean of ``folds``.
    """

    jacobian: np.ndarray
    folds: np.ndarray
    folding_fraction: float


def field_quality(displacement: np.ndarray | torch.Tensor,
                  spacing: Sequence[float] | None = None) -> FieldQuality:
    """Jacobian map, fold mask and folding fraction of one field ``(ndim, *spatial)`` in voxels.

    Examples
    --------
    >>> q = field_quality(np.zeros((2, 8, 8), np.float32))
    >>> float(q.jacobian.mean()), q.folding_fraction
    (1.0, 0.0)
    """
    u = torch.as_tensor(np.ascontiguousarray(displacement, dtype=np.float32))
    central, worst = jacobian_and_worst(u[None], spacing=spacing)
    folds = (worst[0, 0] <= 0).numpy().astype(np.uint8)
    return FieldQuality(central[0, 0].numpy().astype(np.float32, copy=False), folds,
                        float(folds.mean()))


def _masked_values(
    values: torch.Tensor, mask: torch.Tensor | None, like: torch.Tensor
) -> torch.Tensor:
    """Flatten ``values`` ``(B, 1, *spatial)`` to the voxels selected by ``mask`` (> 0)."""
    if mask is None:
        return values.flatten()
    selected = check_mask(mask, like) > 0
    return values[selected.expand_as(values)]


def folding_fraction(
    u: torch.Tensor, *, spacing: Sequence[float] | None = None, mask: torch.Tensor | None = None
) -> float:
    """Fraction of voxels whose Jacobian determinant (``scheme="all"``) is ``<= 0``.

    Parameters
    ----------
    u : torch.Tensor
        Displacement ``(B, ndim, *spatial)``.
    spacing : sequence of float, optional
        See :func:`jacobian_determinant`.
    mask : torch.Tensor, optional
        ``(B, 1, *spatial)``; only voxels with ``mask > 0`` count.

    Returns
    -------
    float
        In ``[0, 1]``, pooled over the batch.

    Examples
    --------
    >>> folding_fraction(torch.zeros(1, 2, 8, 8))
    0.0
    """
    with torch.no_grad():
        det = jacobian_determinant(u, spacing=spacing, scheme="all")
        values = _masked_values(det, mask, u)
        return float((values <= 0).to(torch.float64).mean())


def std_log_jacobian(
    u: torch.Tensor, *, spacing: Sequence[float] | None = None, mask: torch.Tensor | None = None
) -> float:
    """Standard deviation of ``log(det J)`` (central differences), a smoothness measure.

    Determinants are clamped to ``1e-9`` before the log so folds count as very large
    compressions. The population standard deviation (``ddof=0``) over the selected voxels of
    all batch items is returned.

    Parameters
    ----------
    u : torch.Tensor
        Displacement ``(B, ndim, *spatial)``.
    spacing : sequence of float, optional
        See :func:`jacobian_determinant`.
    mask : torch.Tensor, optional
        ``(B, 1, *spatial)``; only voxels with ``mask > 0`` count.

    Returns
    -------
    float
        ``>= 0``; 0 for any affine transform.

    Examples
    --------
    >>> std_log_jacobian(torch.zeros(1, 3, 4, 4, 4))
    0.0
    """
    with torch.no_grad():
        det = jacobian_determinant(u, spacing=spacing, scheme="central")
        values = _masked_values(torch.log(det.clamp_min(1e-9)), mask, u)
        return float(values.to(torch.float64).std(correction=0))


def endpoint_error(
    u_est: torch.Tensor,
    u_true: torch.Tensor,
    spacing: Sequence[float] | None = None,
    mask: torch.Tensor | None = None,
) -> float:
    """Mean Euclidean distance between two displacement fields, in mm.

    Parameters
    ----------
    u_est, u_true : torch.Tensor
        Displacements ``(B, ndim, *spatial)`` in voxels, same shape.
    spacing : sequence of float, optional
        Voxel size per axis in mm; each component is multiplied by it. Default 1 (voxels).
    mask : torch.Tensor, optional
        ``(B, 1, *spatial)``; only voxels with ``mask > 0`` count.

    Returns
    -------
    float
        Mean endpoint error over the selected voxels of all batch items.

    Examples
    --------
    >>> endpoint_error(torch.zeros(1, 2, 4, 4), torch.ones(1, 2, 4, 4), spacing=(3.0, 4.0))
    5.0
    """
    u_est = check_displacement(u_est, "u_est")
    u_true = check_displacement(u_true, "u_true")
    if u_est.shape != u_true.shape:
        raise ValueError(
            f"u_est and u_true: expected the same shape, got {tuple(u_est.shape)} and "
            f"{tuple(u_true.shape)}."
        )
    ndim = u_est.dim() - 2
    h = torch.tensor(check_spacing(spacing, ndim), dtype=u_est.dtype, device=u_est.device)
    with torch.no_grad():
        diff = (u_est - u_true) * h.view(1, ndim, *([1] * ndim))
        error = torch.linalg.vector_norm(diff, dim=1, keepdim=True)
        return float(_masked_values(error, mask, u_est).to(torch.float64).mean())
