"""Spatial transforms: identity grids, warping, affine fields, integration, composition.

Conventions (the full page is ``docs/conventions.md``; every module follows them)

- Tensors are ``(B, C, *spatial)``; ``spatial`` has ``ndim`` = 2 or 3 axes in numpy / napari
  array order, ``(y, x)`` or ``(z, y, x)``. One code path serves 2D and 3D; device and dtype come
  from the inputs.
- A displacement ``u`` is ``(B, ndim, *spatial)``: channel ``i`` is the displacement along array
  axis ``i``, in voxels of the fixed grid. Warping pulls: ``warped(x) = moving(x + u(x))``, and
  ``phi(x) = x + u(x)`` maps a fixed voxel index to a moving voxel index. A stationary velocity
  field has the same shape and units; ``exp(v)`` is computed by scaling and squaring.
- ``compose(first, second) = second + warp(first, second)``: warping by the result equals warping
  by ``first``, then warping that result by ``second``.
- Sampling uses ``align_corners=True``: index ``i`` on an axis of ``n`` voxels is the normalised
  coordinate ``2 i / (n - 1) - 1``. ``grid_sample`` wants its coordinates in ``(x, y[, z])``
  order; this module is the only place that flips them.
- An affine ``(ndim + 1, ndim + 1)`` matrix (or a batch ``(B, ndim + 1, ndim + 1)``) maps fixed
  voxel indices to moving voxel indices in array order: ``[m; 1] = A [f; 1]``. World coordinates
  appear only with ``Image``: resampling onto a reference grid uses
  ``inv(moving.affine) @ reference.affine``.
- Modes: ``"linear"`` (bi/trilinear) for images, ``"nearest"`` for labels. Padding: ``"zeros"``,
  ``"border"`` or ``"reflection"``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from deepreg_core._validate import (
    check_batch_pair,
    check_count,
    check_displacement,
    check_field,
    check_finite,
    check_floating,
    check_matrix,
    check_moving,
    check_same_spatial,
    check_shape,
    check_tensor,
)

if TYPE_CHECKING:
    from deepreg_core.image import Image

_MODES = {"linear": "bilinear", "nearest": "nearest"}
_PADDINGS = ("zeros", "border", "reflection")


# ----------------------------------------------------------------------------- checks

def _check_options(mode: object, padding: object) -> tuple[str, str]:
    for name, value, allowed in (("mode", mode, tuple(_MODES)), ("padding", padding, _PADDINGS)):
        if value not in allowed:
            raise ValueError(f"{name}: expected one of {allowed}, got {value!r}.")
    return str(mode), str(padding)


# ----------------------------------------------------------------------------- sampling core

def _sample(image: torch.Tensor, coords: torch.Tensor, mode: str, padding: str) -> torch.Tensor:
    """Sample float ``image (B|1, C, *in)`` at voxel ``coords (B|1, ndim, *out)`` of its grid."""
    in_shape = image.shape[2:]
    ndim = len(in_shape)
    coords = coords.to(image.dtype)
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in in_shape], dtype=coords.dtype,
                         device=coords.device).view(1, ndim, *[1] * ndim)
    grid = (coords * scale - 1).flip(1).movedim(1, -1)  # (B, *out, ndim) in (x, y[, z]) order
    batch = max(image.shape[0], grid.shape[0])
    image = image.expand(batch, *image.shape[1:])
    grid = grid.expand(batch, *grid.shape[1:])
    return F.grid_sample(image, grid, mode=_MODES[mode], padding_mode=padding, align_corners=True)


def _sample_any(image: torch.Tensor, coords: torch.Tensor, mode: str, padding: str) -> torch.Tensor:
    """`_sample` that also takes integer/bool labels (nearest) and returns their dtype."""
    if image.is_floating_point():
        return _sample(image, coords, mode, padding)
    wide = image.dtype in (torch.int32, torch.int64)  # float32 holds integers only up to 2**24
    work = torch.float64 if wide else coords.dtype
    return _sample(image.to(work), coords, mode, padding).round().to(image.dtype)


def _apply_affine(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A (B, ndim+1, ndim+1)`` applied to index grid ``x (1, ndim, *shape)``."""
    ndim = x.shape[1]
    out = torch.matmul(A[:, :ndim, :ndim], x.flatten(2)) + A[:, :ndim, ndim:]
    return out.reshape(A.shape[0], ndim, *x.shape[2:])


_CACHED_GRID_MAX = 1 << 18  # voxels (at most 16 grids of 3 MB kept); larger ones are rebuilt


@functools.lru_cache(maxsize=16)
def _cached_identity(shape: tuple[int, ...], dtype: torch.dtype, device: str) -> torch.Tensor:
    return identity_grid(shape, device=device, dtype=dtype)


def _identity(u: torch.Tensor) -> torch.Tensor:
    """The identity grid of ``u``'s spatial shape (cached for small grids: an optimiser warps
    on the same grid hundreds of times; never modified in place)."""
    shape = tuple(u.shape[2:])
    if math.prod(shape) <= _CACHED_GRID_MAX:
        return _cached_identity(shape, u.dtype, str(u.device))
    return identity_grid(shape, device=u.device, dtype=u.dtype)


def _coords(u: torch.Tensor) -> torch.Tensor:
    return _identity(u) + u


def _compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    return second + _sample(first, _coords(second), "linear", "border")


# ----------------------------------------------------------------------------- public API

def identity_grid(shape: Sequence[int], *, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Voxel index coordinates of a grid of spatial ``shape`` (2 or 3 sizes, array order).

    Returns a tensor ``(1, ndim, *shape)`` on ``device`` with ``dtype``; channel ``i`` holds the
    index along axis ``i`` (voxels).

    Examples
    --------
    >>> identity_grid((2, 3))[0, 1]
    tensor([[0., 1., 2.],
            [0., 1., 2.]])
    """
    shape = check_shape(shape)
    axes = [torch.arange(n, device=device, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def warp(image: torch.Tensor, displacement: torch.Tensor, *, mode: str = "linear",
         padding: str = "zeros") -> torch.Tensor:
    """Warp an image backwards: ``warped(x) = image(x + u(x))``.

    Parameters
    ----------
    image : Tensor ``(B, C, *spatial)``
        Float image; integer or bool labels with ``mode="nearest"`` (they keep their dtype).
    displacement : Tensor ``(B, ndim, *spatial)``
        In voxels (array order). A batch of 1 broadcasts over the other batch.
    mode : {"linear", "nearest"}
    padding : {"zeros", "border", "reflection"}

    Returns
    -------
    Tensor ``(B, C, *spatial)``. A zero field returns the input exactly when no gradient is needed.

    Examples
    --------
    >>> img = torch.arange(5.0)[None, None, None].expand(1, 1, 3, 5)
    >>> u = torch.zeros(1, 2, 3, 5); u[:, 1] = 1.0     # sample one voxel further along x
    >>> warp(img, u)[0, 0, 0]
    tensor([1., 2., 3., 4., 0.])
    """
    mode, padding = _check_options(mode, padding)
    image = check_moving(image, mode)
    u = check_field(displacement, image.dim() - 2)
    check_same_spatial(image, u, "image", "displacement")
    batch = check_batch_pair(image, u, "image", "displacement")
    needs_grad = torch.is_grad_enabled() and (image.requires_grad or u.requires_grad)
    if not needs_grad and not bool(u.any()):
        # identity transform: skip the ~1e-7 round trip through normalised coordinates
        return image.expand(batch, *image.shape[1:]).clone()
    return _sample_any(image, _coords(u), mode, padding)


def sample_at(image: torch.Tensor, coords: torch.Tensor, *, mode: str = "linear",
              padding: str = "zeros") -> torch.Tensor:
    """Sample ``image`` at voxel coordinates of its grid: ``out[..., p] = image(coords[:, :, p])``.

    Parameters
    ----------
    image : Tensor ``(B, C, *spatial)``
    coords : Tensor ``(B|1, ndim, *out)``
        Voxel indices (array order) of any output layout, e.g. ``(1, ndim, N, 1)`` for N points
        in 2D or ``(1, ndim, N, 1, 1)`` in 3D.
    mode, padding
        As in :func:`warp`.

    Returns
    -------
    Tensor ``(B, C, *out)``.

    Examples
    --------
    >>> img = torch.arange(5.0)[None, None, None].expand(1, 1, 3, 5)
    >>> sample_at(img, torch.tensor([[[[1.0]], [[2.5]]]]))[0, 0]
    tensor([[2.5000]])
    """
    mode, padding = _check_options(mode, padding)
    image = check_moving(image, mode)
    ndim = image.dim() - 2
    if not isinstance(coords, torch.Tensor) or coords.dim() != ndim + 2 or coords.shape[1] != ndim:
        raise ValueError(
            f"coords: expected a tensor (B, {ndim}, *out) with {ndim} output axes for a "
            f"{ndim}D image, got {getattr(coords, 'shape', type(coords).__name__)}."
        )
    return _sample_any(image, coords, mode, padding)


def affine_to_displacement(matrix: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Displacement of an affine voxel transform: ``u(x) = (A [x; 1])[:ndim] - x``.

    ``matrix`` ``(ndim+1, ndim+1)`` or ``(B, ndim+1, ndim+1)`` maps fixed voxel indices to moving
    voxel indices; ``shape`` is the fixed grid. Returns ``(B, ndim, *shape)`` in voxels (B = 1
    when unbatched), with the matrix's dtype and device.

    Examples
    --------
    >>> A = torch.eye(3); A[0, 2] = 2.0                 # shift 2 voxels along y
    >>> affine_to_displacement(A, (4, 4))[0, 0, 0, 0]
    tensor(2.)
    """
    shape = check_shape(shape)
    A = check_matrix(matrix, len(shape))
    x = identity_grid(shape, device=A.device, dtype=A.dtype)
    return _apply_affine(A, x) - x


def resample(image: torch.Tensor, matrix: torch.Tensor, shape: Sequence[int], *,
             mode: str = "linear", padding: str = "zeros") -> torch.Tensor:
    """Sample ``image`` on an output grid of ``shape`` through an affine voxel map.

    ``image`` is ``(B, C, *in_shape)`` (labels allowed with ``mode="nearest"``); ``matrix``
    ``(ndim+1, ndim+1)`` or ``(B, ndim+1, ndim+1)`` maps output voxel indices to input voxel
    indices. Returns ``(B, C, *shape)``; ``mode`` and ``padding`` as in `warp`.

    Examples
    --------
    >>> img = torch.rand(1, 1, 8, 8)
    >>> half = torch.diag(torch.tensor([2.0, 2.0, 1.0]))  # output index i reads input 2 i
    >>> resample(img, half, (4, 4)).shape
    torch.Size([1, 1, 4, 4])
    """
    mode, padding = _check_options(mode, padding)
    image = check_moving(image, mode)
    ndim = image.dim() - 2
    shape = check_shape(shape)
    if len(shape) != ndim:
        raise ValueError(f"shape: expected {ndim} sizes like the image, got {shape}.")
    A = check_matrix(matrix, ndim)
    check_batch_pair(image, A, "image", "matrix")
    coords = _apply_affine(A, identity_grid(shape, device=A.device, dtype=A.dtype))
    return _sample_any(image, coords, mode, padding)


def warp_affine(image: torch.Tensor, matrix: torch.Tensor, *, mode: str = "linear",
                padding: str = "zeros") -> torch.Tensor:
    """Warp by an affine voxel transform on the image's own grid.

    Same result as ``warp(image, affine_to_displacement(matrix, image.shape[2:]))``, computed
    without the round trip through a displacement. ``matrix`` maps fixed voxel indices to
    moving voxel indices, ``(ndim+1, ndim+1)`` or ``(B, ndim+1, ndim+1)``.

    Examples
    --------
    >>> img = torch.rand(2, 1, 8, 8, 8)
    >>> torch.allclose(warp_affine(img, torch.eye(4)), img, atol=1e-5)
    True
    """
    image = check_tensor(image, "image")
    return resample(image, matrix, tuple(image.shape[2:]), mode=mode, padding=padding)


def rotation_matrix(angles: torch.Tensor, ndim: int) -> torch.Tensor:
    """A rotation ``(ndim, ndim)`` from 1 (2D) or 3 (3D) angles in radians (differentiable).

    In 3D the rotations in the planes of axes (0, 1), (0, 2) and (1, 2) are composed in that
    order (the synthetic affines and the rigid refinement share this convention).

    Examples
    --------
    >>> (rotation_matrix(torch.tensor([torch.pi / 2]), 2).round() + 0.0).tolist()
    [[0.0, -1.0], [1.0, 0.0]]
    """
    planes = [(0, 1)] if ndim == 2 else [(0, 1), (0, 2), (1, 2)]
    if angles.numel() != len(planes):
        raise ValueError(f"angles: expected {len(planes)} for {ndim}D, got {angles.numel()}.")
    out = torch.eye(ndim, dtype=angles.dtype, device=angles.device)
    for angle, (i, j) in zip(angles, planes):
        c, s = torch.cos(angle), torch.sin(angle)
        plane = torch.eye(ndim, dtype=angles.dtype, device=angles.device)
        plane = plane.index_put((torch.tensor([i, i, j, j]), torch.tensor([i, j, i, j])),
                                torch.stack([c, -s, s, c]))
        out = out @ plane
    return out


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Compose two displacements: ``second + warp(first, second)`` (border padding).

    Warping by the result equals warping by ``first``, then warping that result by ``second``.
    Both fields are ``(B, ndim, *spatial)`` in voxels; a batch of 1 broadcasts.

    Examples
    --------
    >>> a = torch.full((1, 2, 8, 8), 0.5); b = torch.full((1, 2, 8, 8), 1.0)
    >>> float(compose(a, b)[0, 0, 3, 3])
    1.5
    """
    f = check_displacement(first, "first")
    s = check_field(second, f.dim() - 2, "second")
    check_same_spatial(f, s, "first", "second")
    check_batch_pair(f, s, "first", "second")
    return _compose(f, s)


def integrate_velocity(velocity: torch.Tensor, *, steps: int = 7) -> torch.Tensor:
    """Exponentiate a stationary velocity field by scaling and squaring.

    ``u = v / 2**steps``, then ``u = compose(u, u)`` ``steps`` times. ``velocity`` is
    ``(B, ndim, *spatial)`` in voxels, ``steps`` the number of squarings (>= 0). Returns the
    displacement of ``exp(v)``, ``(B, ndim, *spatial)`` in voxels.

    References
    ----------
    Arsigny et al., "A Log-Euclidean framework for statistics on diffeomorphisms", MICCAI 2006.

    Examples
    --------
    >>> v = 0.1 * torch.randn(1, 3, 8, 8, 8)
    >>> integrate_velocity(v).shape
    torch.Size([1, 3, 8, 8, 8])
    """
    v = check_displacement(velocity, "velocity")
    steps = check_count(steps, "steps", 0)
    u = v / 2**steps
    for _ in range(steps):
        u = _compose(u, u)
    return u


def invert(displacement: torch.Tensor, *, iterations: int = 20) -> torch.Tensor:
    """Approximate inverse of a displacement by fixed-point iteration ``w <- -warp(u, w)``.

    ``displacement`` is ``(B, ndim, *spatial)`` in voxels; ``iterations`` >= 1. The result ``w``
    (same shape) satisfies ``compose(u, w) ~ 0``; the iteration converges for smooth fields
    whose Jacobian ``I + grad u`` stays well away from folding.

    Examples
    --------
    >>> u = torch.full((1, 2, 8, 8), 0.5)
    >>> float(invert(u)[0, 0, 4, 4])
    -0.5
    """
    u = check_displacement(displacement)
    iterations = check_count(iterations, "iterations", 1)
    w = -u
    for _ in range(iterations - 1):
        w = -_sample(u, _coords(w), "linear", "border")
    return w


def resize_displacement(displacement: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resample a field onto a grid of another size spanning the same extent.

    Linear interpolation with ``align_corners=True``; component ``i`` is multiplied by
    ``(new_n_i - 1) / (old_n_i - 1)`` so the result is in voxels of the new grid.

    ``displacement`` is ``(B, ndim, *old_shape)`` in voxels of the old grid; ``shape`` the new
    spatial shape (at least 2 voxels per axis, old and new). Returns ``(B, ndim, *shape)``.

    Examples
    --------
    >>> coarse = torch.ones(1, 2, 9, 9)
    >>> float(resize_displacement(coarse, (17, 17))[0, 0, 0, 0])
    2.0
    """
    u = check_displacement(displacement)
    shape = check_shape(shape)
    ndim = u.dim() - 2
    old = tuple(u.shape[2:])
    if len(shape) != ndim:
        raise ValueError(f"shape: expected {ndim} sizes like the field, got {shape}.")
    if min(old + shape) < 2:
        raise ValueError(
            f"resize_displacement: expected at least 2 voxels on every axis, got field shape "
            f"{old} and target shape {shape}."
        )
    out = F.interpolate(u, size=shape, mode="bilinear" if ndim == 2 else "trilinear",
                        align_corners=True)
    factors = torch.tensor([(n - 1) / (o - 1) for n, o in zip(shape, old)], dtype=u.dtype,
                           device=u.device)
    return out * factors.view(1, ndim, *[1] * ndim)


def transform_points(points: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Map points through ``phi(x) = x + u(x)``: fixed voxel positions to moving ones.

    ``points`` ``(N, ndim)`` are float voxel positions on the fixed grid (array order);
    ``displacement`` ``(1, ndim, *spatial)`` is sampled linearly at them (border values outside
    the grid). Returns moving voxel positions ``(N, ndim)`` with the points' dtype.

    Examples
    --------
    >>> u = torch.full((1, 2, 8, 8), 1.5)
    >>> transform_points(torch.tensor([[2.0, 3.0]]), u)
    tensor([[3.5000, 4.5000]])
    """
    p = check_finite(check_floating(check_tensor(points, "points"), "points"), "points")
    u = check_displacement(displacement)
    ndim = u.dim() - 2
    if p.dim() != 2 or p.shape[1] != ndim:
        raise ValueError(
            f"points: expected shape (N, {ndim}) to match the {ndim}D field, got {tuple(p.shape)}."
        )
    if u.shape[0] != 1:
        raise ValueError(f"displacement: expected a batch of 1, got {u.shape[0]}.")
    check_batch_pair(p, u, "points", "displacement")
    coords = p.T.reshape(1, ndim, *[1] * (ndim - 1), p.shape[0])
    sampled = _sample(u.to(p.dtype), coords, "linear", "border")
    return p + sampled.reshape(ndim, -1).T


def resample_to(moving: Image, reference: Image, *, mode: str = "linear",
                padding: str = "zeros") -> Image:
    """Resample an `Image` onto another `Image`'s grid, through world coordinates.

    The voxel map is ``inv(moving.affine) @ reference.affine`` (reference voxel -> moving voxel).

    ``moving`` and ``reference`` need the same number of spatial axes; ``mode`` and ``padding``
    as in `warp`. Returns an `Image` with the reference's shape, affine and meta (the result
    lives in the reference's space) and ``float32`` data, or the label dtype with
    ``mode="nearest"``.

    Examples
    --------
    >>> from deepreg_core.image import Image
    >>> a = Image(data=np.zeros((8, 8), np.float32), affine=np.eye(3))
    >>> b = Image(data=np.zeros((4, 4), np.float32), affine=np.diag([2.0, 2.0, 1.0]))
    >>> resample_to(a, b).data.shape
    (4, 4)
    """
    from deepreg_core.image import Image

    for name, value in (("moving", moving), ("reference", reference)):
        if not isinstance(value, Image):
            raise TypeError(
                f"{name}: expected a deepreg_core.image.Image, got {type(value).__name__}."
            )
    if moving.data.ndim != reference.data.ndim:
        raise ValueError(
            f"resample_to: expected images with the same number of spatial axes, got moving "
            f"{moving.data.shape} ({moving.data.ndim}D) and reference {reference.data.shape} "
            f"({reference.data.ndim}D)."
        )
    matrix = np.linalg.inv(np.asarray(moving.affine, np.float64)) @ np.asarray(
        reference.affine, np.float64)
    data = np.asarray(moving.data)
    labels = mode == "nearest" and data.dtype.kind in "biu"
    if data.shape == reference.data.shape and np.allclose(matrix, np.eye(len(matrix)),
                                                          rtol=0.0, atol=1e-6):
        # the same grid: every voxel samples itself (what interpolation would return, minus
        # float rounding), so copy instead of interpolating
        out = data.copy() if labels else data.astype(np.float32, copy=True)
        return Image(data=out, affine=np.array(reference.affine, copy=True),
                     meta=dict(reference.meta))
    array = data.astype(np.float64 if labels else np.float32)
    out = resample(torch.from_numpy(array)[None, None], torch.from_numpy(matrix),
                   reference.data.shape, mode=mode, padding=padding)[0, 0].numpy()
    out = np.round(out).astype(data.dtype) if labels else out.astype(np.float32, copy=False)
    return Image(data=out, affine=np.array(reference.affine, copy=True), meta=dict(reference.meta))
