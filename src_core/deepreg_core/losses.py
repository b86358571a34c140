"""Similarity measures, overlap and regularisers for registration.

Pure tensor functions come first and return the natural quantity (NCC is 1 for identical
images, MI is in nats). The ``nn.Module`` classes below them only hold options and return a
loss to *minimise* (``1 - ncc``, ``-mi``, ...).

Images are float tensors ``(B, C, *spatial)`` with 2 or 3 spatial axes in array order; an
optional ``mask`` ``(B, 1, *spatial)`` (or batch 1) weights the voxels. Displacements are
``(B, ndim, *spatial)`` (``docs/conventions.md``). Device and dtype come from the inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deepreg_core._diff import check_mask, hessian, spatial_gradient
from deepreg_core._validate import (
    check_displacement,
    check_image,
    check_image_pair,
)

__all__ = [
    "BendingEnergy",
    "DiceLoss",
    "Diffusion",
    "LocalNCCLoss",
    "MSELoss",
    "MutualInformationLoss",
    "NCCLoss",
    "bending_energy",
    "box_filter",
    "diffusion",
    "get_similarity",
    "local_ncc",
    "mse",
    "mutual_information",
    "ncc",
    "soft_dice",
]


def _weighted_mean(x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x`` ``(B, C, *spatial)`` over everything but the batch: ``(B,)``."""
    if weights is None:
        return x.flatten(1).mean(dim=1)
    weights = weights.expand_as(x)
    return (x * weights).flatten(1).sum(dim=1) / weights.flatten(1).sum(dim=1)


def mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference.

    Parameters
    ----------
    a, b : torch.Tensor
        Float images ``(B, C, *spatial)`` of the same shape.
    mask : torch.Tensor, optional
        Voxel weights ``(B, 1, *spatial)``.

    Returns
    -------
    torch.Tensor
        Scalar: the (weighted) mean over voxels and channels, then over the batch.

    Examples
    --------
    >>> mse(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    tensor(1.)
    """
    check_image_pair(a, b)
    weights = None if mask is None else check_mask(mask, a)
    return _weighted_mean((a - b) ** 2, weights).mean()


def ncc(
    a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Global normalised cross-correlation (Pearson correlation) per batch item.

    ``ncc = cov(a, b) / sqrt(var(a) var(b) + eps**2)`` over all channels and voxels of one
    batch item (weighted by ``mask``), averaged over the batch. It is 1 for identical images
    or any increasing affine intensity map (``2 a + 3``), -1 for a decreasing one and 0 when
    either image is constant.

    Parameters
    ----------
    a, b : torch.Tensor
        Float images ``(B, C, *spatial)`` of the same shape.
    mask : torch.Tensor, optional
        Voxel weights ``(B, 1, *spatial)``.
    eps : float
        Stabiliser, in intensity units squared (compare with the product of the standard
        deviations).

    Returns
    -------
    torch.Tensor
        Scalar in ``[-1, 1]``.

    Examples
    --------
    >>> x = torch.rand(1, 1, 8, 8)
    >>> float(ncc(x, 2 * x + 3))  # doctest: +SKIP
    1.0
    """
    check_image_pair(a, b)
    weights = None if mask is None else check_mask(mask, a)
    shape = (-1,) + (1,) * (a.dim() - 1)
    da = a - _weighted_mean(a, weights).view(shape)
    db = b - _weighted_mean(b, weights).view(shape)
    cov = _weighted_mean(da * db, weights)
    var_a = _weighted_mean(da * da, weights)
    var_b = _weighted_mean(db * db, weights)
    return (cov / torch.sqrt(var_a * var_b + eps**2)).mean()


def _check_window(window: object, ndim: int) -> tuple[int, ...]:
    values = (window,) * ndim if isinstance(window, int) else window
    if (
        isinstance(window, bool)
        or not isinstance(values, Sequence)
        or len(values) != ndim
        or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 or w % 2 == 0 for w in values)
    ):
        raise ValueError(
            f"window: expected an odd positive int or {ndim} of them (one per spatial axis), "
            f"got {window!r}."
        )
    return tuple(values)


SHIFTED_BOX_MAX = 7  # widest box summed as shifted views; wider boxes use a running sum


def _box_sum(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Sum over a box around every voxel, zero beyond the borders, one axis at a time.

    A narrow box (at most :data:`SHIFTED_BOX_MAX` wide, e.g. the refinement's 5) is the sum of
    shifted views of the zero-padded tensor: on CPU 1.4-1.7 times faster, forward and backward,
    than a running sum (``bench/kernels.py``). A wider box uses a running (cumulative) sum, whose
    cost does not grow with the width and whose backward pass is another running sum.
    """
    for axis, size in enumerate(sizes):
        if size == 1:
            continue
        dim, n, r = axis + 2, x.shape[axis + 2], size // 2
        if size > SHIFTED_BOX_MAX:
            moved = F.pad(x.movedim(dim, -1), (r + 1, r))
            total = torch.cumsum(moved, dim=-1).movedim(-1, dim)
            x = total.narrow(dim, size, n) - total.narrow(dim, 0, n)
        else:
            pad = [0, 0] * (x.dim() - 2)  # F.pad lists the last axis first
            pad[2 * (x.dim() - 1 - dim)] = pad[2 * (x.dim() - 1 - dim) + 1] = r
            padded = F.pad(x, pad)
            out = padded.narrow(dim, 0, n)
            for k in range(1, size):
                out = out + padded.narrow(dim, k, n)
            x = out
    return x


def _box_count(shape: Sequence[int], sizes: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """How many voxels of each box lie inside the image: an outer product of 1D counts."""
    count = torch.ones((), dtype=like.dtype, device=like.device)
    for axis, (n, size) in enumerate(zip(shape, sizes)):
        idx = torch.arange(n, dtype=like.dtype, device=like.device)
        r = size // 2
        line = torch.minimum(idx + r, torch.full_like(idx, n - 1)) - torch.clamp(idx - r, min=0) + 1
        view = [1] * len(shape)
        view[axis] = n
        count = count * line.view(view)
    return count


def box_filter(x: torch.Tensor, window: int | Sequence[int]) -> torch.Tensor:
    """Local mean over a ``window``-wide box, computed separably (one running sum per axis).

    Voxels outside the image are left out of the mean (zero padding divided by the number of
    voxels inside), so the interior equals ``scipy.ndimage.uniform_filter``.

    Parameters
    ----------
    x : torch.Tensor
        Float tensor ``(B, C, *spatial)``.
    window : int or sequence of int
        Odd box width in voxels, one for all axes or one per axis.

    Returns
    -------
    torch.Tensor
        Same shape as ``x``.
    """
    x = check_image(x, "x")
    sizes = _check_window(window, x.dim() - 2)
    return _box_sum(x, sizes) / _box_count(x.shape[2:], sizes, x)


def local_ncc(
    a: torch.Tensor,
    b: torch.Tensor,
    window: int | Sequence[int] = 9,
    mask: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Windowed (local) squared normalised cross-correlation, averaged over voxels.

    In each ``window`` box: ``lncc = (cov**2 + eps) / (var_a var_b + eps)`` with local means,
    variances and covariance from a separable box filter (:func:`box_filter`). This is the
    squared form of VoxelMorph and MONAI: it lies in ``[0, 1]``, is 1 for identical images
    (flat regions included) and is invariant to any local affine intensity change ``s a + t``,
    including a contrast inversion (``s < 0``).

    Parameters
    ----------
    a, b : torch.Tensor
        Float images ``(B, C, *spatial)`` of the same shape.
    window : int or sequence of int
        Odd box width in voxels (one for all axes or one per axis).
    mask : torch.Tensor, optional
        Voxel weights ``(B, 1, *spatial)`` for the average of the local values.
    eps : float
        Added to numerator and denominator (intensity units to the fourth power).

    Returns
    -------
    torch.Tensor
        Scalar in ``[0, 1]``.

    Examples
    --------
    >>> x = torch.rand(1, 1, 16, 16)
    >>> float(local_ncc(x, 1 - x, window=5))  # doctest: +SKIP
    1.0
    """
    check_image_pair(a, b)
    _check_window(window, a.dim() - 2)
    weights = None if mask is None else check_mask(mask, a)
    # Centring per image changes no local statistic but avoids cancellation in E[x^2] - E[x]^2.
    dims = tuple(range(1, a.dim()))
    a = a - a.mean(dim=dims, keepdim=True)
    b = b - b.mean(dim=dims, keepdim=True)
    # One filter pass over the five maps stacked as channels (a third of the separate passes).
    channels = a.shape[1]
    stats = box_filter(torch.cat([a, b, a * b, a * a, b * b], dim=1), window)
    mean_a, mean_b, mean_ab, mean_aa, mean_bb = stats.split(channels, dim=1)
    cov = mean_ab - mean_a * mean_b
    var_a = (mean_aa - mean_a**2).clamp_min(0)
    var_b = (mean_bb - mean_b**2).clamp_min(0)
    local = (cov**2 + eps) / (var_a * var_b + eps)
    return _weighted_mean(local, weights).mean()


class ReferenceLocalNCC(nn.Module):
    """``1 - local_ncc(reference, moving, window)`` against one reference image, whose local
    means and variances are filtered once: an optimiser that warps a moving image against the same
    fixed one, as the deformable refinement levels do, filters three maps per step instead of
    five (forward and backward).

    ``reference`` is ``(B, C, *spatial)``; every call's ``moving`` must have its shape, device
    and dtype (the cached statistics are plain tensors: build one per device). Equal to
    ``LocalNCCLoss(window, eps)(reference, moving)`` up to rounding.

    >>> ref, mov = torch.rand(1, 1, 12, 10), torch.rand(1, 1, 12, 10)
    >>> a, b = ReferenceLocalNCC(ref, 5)(mov), LocalNCCLoss(5)(ref, mov)
    >>> bool(torch.isclose(a, b, atol=1e-6))
    True
    """

    def __init__(self, reference: torch.Tensor, window: int | Sequence[int] = 9,
                 eps: float = 1e-5) -> None:
        super().__init__()
        reference = check_image(reference, "reference").detach()
        self.window = _check_window(window, reference.dim() - 2)
        self.eps = eps
        self.shape = tuple(reference.shape)
        self.dims = tuple(range(1, reference.dim()))
        a = reference - reference.mean(dim=self.dims, keepdim=True)
        mean_a, mean_aa = box_filter(torch.cat([a, a * a], dim=1), self.window).split(
            a.shape[1], dim=1)
        self.a = a
        self.mean_a = mean_a
        self.var_a = (mean_aa - mean_a**2).clamp_min(0)

    def forward(self, moving: torch.Tensor) -> torch.Tensor:
        if tuple(moving.shape) != self.shape:
            raise ValueError(f"moving: expected shape {self.shape} (the reference's), "
                             f"got {tuple(moving.shape)}.")
        b = moving - moving.mean(dim=self.dims, keepdim=True)
        mean_b, mean_ab, mean_bb = box_filter(torch.cat([b, self.a * b, b * b], dim=1),
                                              self.window).split(b.shape[1], dim=1)
        cov = mean_ab - self.mean_a * mean_b
        var_b = (mean_bb - mean_b**2).clamp_min(0)
        local = (cov**2 + self.eps) / (self.var_a * var_b + self.eps)
        return 1 - local.mean()


def _check_bins(bins: object) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins: expected an int >= 2, got {bins!r}.")
    return bins


def _check_max_voxels(max_voxels: object) -> None:
    if max_voxels is not None and (
        isinstance(max_voxels, bool) or not isinstance(max_voxels, int) or max_voxels < 1
    ):
        raise ValueError(f"max_voxels: expected a positive int or None, got {max_voxels!r}.")


def _uniform_subset(n: int, count: int, batch: int, device) -> torch.Tensor:
    """The fixed pseudo-random voxel subset (seed 0, with replacement) of an unmasked mutual
    information: indices ``(batch, count)`` into ``n`` voxels, the same on every call."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(n, (1, count), generator=generator).to(device).expand(batch, -1)


MI_MAX_VOXELS = 65536  # voxels a mutual information samples at most (a fixed subset)


def mutual_information(
    a: torch.Tensor,
    b: torch.Tensor,
    bins: int = 32,
    sigma: float | None = None,
    mask: torch.Tensor | None = None,
    max_voxels: int | None = MI_MAX_VOXELS,
) -> torch.Tensor:
    """Differentiable mutual information from a Parzen-window (Gaussian) joint histogram.

    Each image is min-max normalised to ``[0, 1]`` per batch item (the min and max are
    detached). Every voxel spreads a unit of mass over ``bins`` bin centres
    ``linspace(0, 1, bins)`` with Gaussian weights of width ``sigma``; the joint histogram is
    the (mask-weighted) mean of the outer products, and
    ``MI = sum p_ab log(p_ab / (p_a p_b))``. Channels count as further samples.

    Parameters
    ----------
    a, b : torch.Tensor
        Float images ``(B, C, *spatial)`` of the same shape.
    bins : int
        Number of histogram bins, >= 2.
    sigma : float, optional
        Parzen width in normalised intensity units; default half a bin, ``0.5 / (bins - 1)``.
    mask : torch.Tensor, optional
        Voxel weights ``(B, 1, *spatial)``.
    max_voxels : int or None
        At most this many voxels per batch item enter the histogram (memory is
        ``O(B * max_voxels * bins)``). Larger images use a fixed pseudo-random subset (seed 0,
        the same on every call): drawn uniformly with replacement, or, when a mask is given,
        without replacement among the masked voxels first.
        None uses every voxel.

    Returns
    -------
    torch.Tensor
        Scalar, in nats, averaged over the batch. Symmetric in ``a`` and ``b``.

    Examples
    --------
    >>> x = torch.rand(1, 1, 16, 16)
    >>> bool(mutual_information(x, x) > mutual_information(x, torch.rand(1, 1, 16, 16)))
    True
    """
    check_image_pair(a, b)
    bins = _check_bins(bins)
    if sigma is None:
        sigma = 0.5 / (bins - 1)
    if not (isinstance(sigma, (int, float)) and sigma > 0 and sigma < float("inf")):
        raise ValueError(f"sigma: expected a positive finite float, got {sigma!r}.")
    _check_max_voxels(max_voxels)
    weights = None if mask is None else check_mask(mask, a)

    batch = a.shape[0]
    x, y = a.reshape(batch, -1), b.reshape(batch, -1)
    x = _normalise(x)
    y = _normalise(y)
    w = (torch.ones_like(a) if weights is None else weights.expand_as(a)).reshape(batch, -1)
    n = x.shape[1]
    if max_voxels is not None and n > max_voxels:
        if weights is None:  # uniform draw (with replacement): O(max_voxels), not O(n)
            idx = _uniform_subset(n, max_voxels, batch, a.device)
        else:
            generator = torch.Generator().manual_seed(0)
            keys = torch.rand(n, generator=generator, dtype=torch.float64).to(a.device)
            keys = torch.where(w > 0, keys, keys + 2.0)  # masked voxels first, in random order
            idx = torch.topk(keys, max_voxels, dim=1, largest=False).indices
        x, y, w = x.gather(1, idx), y.gather(1, idx), w.gather(1, idx)

    centres = torch.linspace(0, 1, bins, dtype=a.dtype, device=a.device)
    pa = _parzen(x, centres, sigma) * w[..., None]  # (B, N, bins)
    pb = _parzen(y, centres, sigma)
    return _mi_of_memberships(pa, pb, w.sum(dim=1))


def _mi_of_memberships(pa: torch.Tensor, pb: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """MI (nats, batch mean) from weighted memberships ``pa``, ``pb`` ``(B, N, bins)`` whose
    weights sum to ``total`` ``(B,)``."""
    batch = pa.shape[0]
    joint = pa.transpose(1, 2) @ pb / total.view(batch, 1, 1)  # (B, bins, bins)
    marg_a = joint.sum(dim=2, keepdim=True)
    marg_b = joint.sum(dim=1, keepdim=True)
    tiny = torch.finfo(pa.dtype).tiny
    mi = joint * (torch.log(joint + tiny) - torch.log(marg_a * marg_b + tiny))
    return mi.sum(dim=(1, 2)).mean()


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each row of ``x`` ``(B, N)`` to [0, 1] with detached min and max."""
    lo = x.detach().min(dim=1, keepdim=True).values
    hi = x.detach().max(dim=1, keepdim=True).values
    return (x - lo) / (hi - lo).clamp_min(torch.finfo(x.dtype).tiny)


def _parzen(x: torch.Tensor, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian bin memberships ``(B, N, bins)`` of ``x`` ``(B, N)``, summing to 1 per voxel."""
    weights = torch.exp((x[..., None] - centres).square() * (-0.5 / sigma**2))
    return weights / weights.sum(dim=-1, keepdim=True)


class ReferenceMutualInformation(nn.Module):
    """``-mutual_information(reference, moving)`` against one reference sample set, whose Parzen
    memberships are computed once (an optimiser that compares many moving samples with the same
    fixed samples, as the affine refinement levels do, pays for one histogram side per step).

    ``reference`` is ``(B, C, *spatial)``; every call's ``moving`` must have its shape, device
    and dtype (build one per device). Equal to
    ``MutualInformationLoss(bins, sigma, max_voxels)(reference, moving)``: with ``max_voxels``
    (default None, every voxel) the same fixed voxel subset as :func:`mutual_information`'s.

    >>> ref = torch.rand(1, 1, 64, 1)
    >>> float(ReferenceMutualInformation(ref)(ref)) == float(-mutual_information(ref, ref))
    True
    """

    def __init__(self, reference: torch.Tensor, bins: int = 32, sigma: float | None = None,
                 max_voxels: int | None = None) -> None:
        super().__init__()
        self.bins = _check_bins(bins)
        self.sigma = 0.5 / (self.bins - 1) if sigma is None else float(sigma)
        self.shape = tuple(reference.shape)
        batch = reference.shape[0]
        self.centres = torch.linspace(0, 1, self.bins, dtype=reference.dtype,
                                      device=reference.device)
        _check_max_voxels(max_voxels)
        x = _normalise(reference.detach().reshape(batch, -1))
        self.idx: torch.Tensor | None = None
        if max_voxels is not None and x.shape[1] > max_voxels:  # mutual_information's subset
            self.idx = _uniform_subset(x.shape[1], max_voxels, batch, reference.device)
            x = x.gather(1, self.idx)
        self.pa = _parzen(x, self.centres, self.sigma)
        self.total = torch.full((batch,), float(x.shape[1]), dtype=reference.dtype,
                                device=reference.device)

    def forward(self, moving: torch.Tensor) -> torch.Tensor:
        if tuple(moving.shape) != self.shape:
            raise ValueError(f"moving: expected shape {self.shape} (the reference's), "
                             f"got {tuple(moving.shape)}.")
        y = _normalise(moving.reshape(self.shape[0], -1))
        if self.idx is not None:
            y = y.gather(1, self.idx)
        return -_mi_of_memberships(self.pa, _parzen(y, self.centres, self.sigma), self.total)


def soft_dice(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Soft Dice overlap of one-hot or probability maps, averaged over classes and batch.

    ``dice_k = (2 sum(a_k b_k) + eps) / (sum(a_k) + sum(b_k) + eps)`` per batch item and class
    ``k``; a class absent from both maps scores 1.

    Parameters
    ----------
    a, b : torch.Tensor
        Float maps ``(B, K, *spatial)`` with values in ``[0, 1]``, same shape.
    eps : float
        Smoothing added to numerator and denominator.

    Returns
    -------
    torch.Tensor
        Scalar in ``[0, 1]``: 1 for identical one-hot maps, ~0 for disjoint ones.

    Examples
    --------
    >>> m = torch.zeros(1, 1, 4, 4); m[..., :2, :] = 1
    >>> float(soft_dice(m, m))
    1.0
    """
    check_image_pair(a, b)
    dims = tuple(range(2, a.dim()))
    overlap = (a * b).sum(dim=dims)
    total = a.sum(dim=dims) + b.sum(dim=dims)
    return ((2 * overlap + eps) / (total + eps)).mean()


def diffusion(u: torch.Tensor, spacing: Sequence[float] | None = None) -> torch.Tensor:
    """Diffusion regulariser: mean over voxels of the squared Frobenius norm of grad u.

    ``mean_x sum_{c, d} (d u_c / d x_d)**2`` with central differences (one-sided at the
    borders), averaged over the batch. A linear field ``u = A x`` gives ``sum(A**2)``.

    Parameters
    ----------
    u : torch.Tensor
        Displacement ``(B, ndim, *spatial)``.
    spacing : sequence of float, optional
        Voxel size per axis; derivatives are divided by it.

    Returns
    -------
    torch.Tensor
        Scalar, >= 0.

    Examples
    --------
    >>> float(diffusion(torch.ones(1, 2, 8, 8)))
    0.0
    """
    u = check_displacement(u, "u")
    grad = spatial_gradient(u, spacing=spacing)
    return grad.pow(2).sum(dim=(1, 2)).mean()


def bending_energy(u: torch.Tensor, spacing: Sequence[float] | None = None) -> torch.Tensor:
    """Bending energy: mean over voxels of the summed squared second derivatives of ``u``.

    ``mean_x sum_c sum_{i, j} (d^2 u_c / d x_i d x_j)**2``: mixed derivatives count twice
    (``i, j`` and ``j, i``), as in the thin-plate spline energy. Affine fields score 0; the
    stencils are exact for quadratic fields (see ``deepreg_core._diff.hessian``).

    Parameters
    ----------
    u : torch.Tensor
        Displacement ``(B, ndim, *spatial)``.
    spacing : sequence of float, optional
        Voxel size per axis; derivatives are divided by it.

    Returns
    -------
    torch.Tensor
        Scalar, >= 0.

    Examples
    --------
    >>> y = torch.arange(6.0).view(1, 1, 6, 1).expand(1, 2, 6, 6)
    >>> float(bending_energy(0.5 * y**2))  # d2/dy2 = 1 in both channels
    2.0
    """
    u = check_displacement(u, "u")
    return hessian(u, spacing=spacing).pow(2).sum(dim=(1, 2, 3)).mean()


class MSELoss(nn.Module):
    """``mse(fixed, moving, mask)``; see :func:`mse`."""

    def forward(
        self, fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return mse(fixed, moving, mask)


class NCCLoss(nn.Module):
    """``1 - ncc(fixed, moving)``, in ``[0, 2]``; see :func:`ncc`."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(
        self, fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return 1 - ncc(fixed, moving, mask, eps=self.eps)


class LocalNCCLoss(nn.Module):
    """``1 - local_ncc(fixed, moving, window)``, in ``[0, 1]``; see :func:`local_ncc`."""

    def __init__(self, window: int | Sequence[int] = 9, eps: float = 1e-5) -> None:
        super().__init__()
        if isinstance(window, int):
            _check_window(window, 1)
        self.window = window
        self.eps = eps

    def forward(
        self, fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return 1 - local_ncc(fixed, moving, self.window, mask, eps=self.eps)


class MutualInformationLoss(nn.Module):
    """``-mutual_information(fixed, moving)`` in nats; see :func:`mutual_information`."""

    def __init__(
        self, bins: int = 32, sigma: float | None = None, max_voxels: int | None = MI_MAX_VOXELS
    ) -> None:
        super().__init__()
        self.bins = _check_bins(bins)
        self.sigma = sigma
        self.max_voxels = max_voxels

    def forward(
        self, fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return -mutual_information(
            fixed, moving, self.bins, self.sigma, mask, max_voxels=self.max_voxels
        )


class DiceLoss(nn.Module):
    """``1 - soft_dice(a, b)``, in ``[0, 1]``; see :func:`soft_dice`."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1 - soft_dice(a, b, eps=self.eps)


class Diffusion(nn.Module):
    """Diffusion regulariser of a displacement; see :func:`diffusion`."""

    def __init__(self, spacing: Sequence[float] | None = None) -> None:
        super().__init__()
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return diffusion(u, self.spacing)


class BendingEnergy(nn.Module):
    """Bending energy of a displacement; see :func:`bending_energy`."""

    def __init__(self, spacing: Sequence[float] | None = None) -> None:
        super().__init__()
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return bending_energy(u, self.spacing)


_SIMILARITIES: dict[str, type[nn.Module]] = {
    "mse": MSELoss,
    "ncc": NCCLoss,
    "lncc": LocalNCCLoss,
    "mi": MutualInformationLoss,
}


def get_similarity(name: str, **kwargs: object) -> nn.Module:
    """Build an image-similarity loss module by name.

    Parameters
    ----------
    name : {"mse", "ncc", "lncc", "mi"}
        Mean squared error, global NCC, local NCC, mutual information.
    **kwargs
        Options of the module (e.g. ``window=7`` for ``"lncc"``, ``bins=48`` for ``"mi"``).

    Returns
    -------
    torch.nn.Module
        Called as ``loss(fixed, moving, mask=None)``; returns a scalar to minimise.

    Examples
    --------
    >>> get_similarity("lncc", window=5)
    LocalNCCLoss()
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _SIMILARITIES:
        raise ValueError(f"similarity: expected one of {sorted(_SIMILARITIES)}, got {name!r}.")
    return _SIMILARITIES[key](**kwargs)
