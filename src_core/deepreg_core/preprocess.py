"""Preprocessing shared by training, inference and refinement: one path for every image.

Everything a network or the refinement sees goes through these functions, so that a training
sample and an inference input of the same image are the same tensor:

- :func:`normalize_intensity` maps the 1st..99th percentiles to ``[0, 1]`` (NumPy or torch);
- :func:`resize_image` resizes over the same extent with anti-aliasing when down-sampling;
  :func:`resize_labels` does the same for label maps (nearest neighbour);
- :func:`network_input` is the two in that order (what a network is fed);
- :func:`normalized_to_voxel_affine` / :func:`voxel_to_normalized_affine` convert affines
  between the networks' normalised coordinates and voxel indices.

This module sits on the ground floor with :mod:`deepreg_core.spatial`: it imports nothing from
models, losses, training or inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np
import torch
import torch.nn.functional as F

from deepreg_core._diff import conv_along_axis, gaussian_kernel

__all__ = [
    "PERCENTILE_MAX_VOXELS",
    "homogeneous",
    "network_input",
    "normalize_intensity",
    "normalized_to_voxel_affine",
    "resize_image",
    "resize_labels",
    "voxel_to_normalized_affine",
    "working_shape",
]

PERCENTILE_MAX_VOXELS = 1 << 20
_FLOAT32_SAFE = float(np.finfo(np.float32).max) / 16  # scales below this stay finite in float32


def _percentiles(flat: np.ndarray, low: float, high: float) -> tuple[float, float]:
    stride = max(1, flat.size // PERCENTILE_MAX_VOXELS)
    lo, hi = (float(v) for v in np.percentile(flat[::stride], [low, high]))
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
    return lo, hi


@overload
def normalize_intensity(data: np.ndarray, low: float = ..., high: float = ...) -> np.ndarray: ...
@overload
def normalize_intensity(data: torch.Tensor, low: float = ..., high: float = ...) -> torch.Tensor: ...
def normalize_intensity(data: Any, low: float = 1.0, high: float = 99.0) -> Any:
    """Map the ``low``..``high`` percentiles of ``data`` to 0..1 and clip (float32).

    Takes and returns a NumPy array or a torch tensor (same type, float32). Above
    ``PERCENTILE_MAX_VOXELS`` voxels the percentiles are read from a regular subsample (every
    ``k``-th voxel in memory order; deterministic), which moves them by far less than the
    intensity noise of an image that size. When the percentiles coincide (a mostly constant
    image) the minimum and maximum are used; a constant image gives zeros. The scale is computed
    in double precision, so images whose values are all tiny (below ``1e-38``) normalise like any
    other instead of overflowing to NaN. Values must be finite (checked by the callers, which
    know what to name in the message).

    Examples
    --------
    >>> normalize_intensity(np.array([0.0, 5.0, 10.0])).tolist()
    [0.0, 0.5, 1.0]
    >>> normalize_intensity(torch.full((3,), 7.0)).tolist()
    [0.0, 0.0, 0.0]
    """
    as_tensor = isinstance(data, torch.Tensor)
    array = data.detach().cpu().numpy() if as_tensor else np.asarray(data)
    array = np.asarray(array, dtype=np.float32)
    lo, hi = _percentiles(array.reshape(-1), low, high)
    if not hi > lo:
        out = np.zeros_like(array)
    else:
        scale = 1.0 / (hi - lo)  # float64: finite even when hi - lo is a float32 denormal
        if max(scale, abs(lo) * scale) < _FLOAT32_SAFE:
            out = (array - np.float32(lo)) * np.float32(scale)
        else:
            out = ((array.astype(np.float64) - lo) * scale).astype(np.float32)
        np.clip(out, 0.0, 1.0, out=out)
    if as_tensor:
        return torch.from_numpy(out).to(data.device)
    return out


def working_shape(shape: Sequence[int], scale: float) -> tuple[int, ...]:
    """The grid a network sees at ``scale``: ``round(n * scale)`` per axis, at least 2 voxels.

    Examples
    --------
    >>> working_shape((160, 192, 224), 0.5)
    (80, 96, 112)
    """
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"scale: expected 0 < scale <= 1, got {scale!r}.")
    return tuple(n if n <= 2 else max(2, round(n * scale)) for n in shape)


def _gaussian_blur(x: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur along each spatial axis with ``sigma > 0`` (replicate edges)."""
    for axis, sigma in enumerate(sigmas):
        if sigma > 0:
            x = conv_along_axis(x, gaussian_kernel(sigma), axis, padding_mode="replicate")
    return x


def antialias(image: torch.Tensor, factors: Sequence[float]) -> torch.Tensor:
    """Blur ``(B, C, *spatial)`` before sampling it ``factors`` times coarser per axis.

    A Gaussian of ``sigma = (factor - 1) / 2`` voxels (scikit-image's rule); axes sampled at the
    same or a finer step are left alone.
    """
    return _gaussian_blur(image, [max(float(f) - 1.0, 0.0) / 2 for f in factors])


def resize_image(image: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resize ``(B, C, *spatial)`` to ``shape`` over the same extent (``align_corners=True``).

    Down-sampling first blurs with a Gaussian of ``sigma = (factor - 1) / 2`` voxels per axis
    (scikit-image's anti-aliasing rule), then interpolates linearly. This is the grid
    :func:`~deepreg_core.spatial.resize_displacement` assumes.

    Examples
    --------
    >>> resize_image(torch.rand(1, 1, 64, 64), (32, 32)).shape
    torch.Size([1, 1, 32, 32])
    """
    shape = tuple(int(n) for n in shape)
    if tuple(image.shape[2:]) == shape:
        return image
    factors = [(n_in - 1) / max(n_out - 1, 1) for n_in, n_out in zip(image.shape[2:], shape)]
    image = antialias(image, factors)
    mode = "bilinear" if image.dim() == 4 else "trilinear"
    return F.interpolate(image, size=shape, mode=mode, align_corners=True)


def _coordinate_maps(shape: Sequence[int], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Homogeneous ``S`` (voxel index -> ``align_corners=True`` coordinate) and its inverse."""
    ndim = len(shape)
    S = torch.eye(ndim + 1, dtype=like.dtype, device=like.device)
    S_inv = S.clone()
    for axis, n in enumerate(shape):
        half = max(int(n) - 1, 1) / 2.0
        S[axis, axis], S[axis, ndim] = 1.0 / half, -1.0
        S_inv[axis, axis] = S_inv[axis, ndim] = half
    return S, S_inv


def homogeneous(matrix: torch.Tensor, ndim: int, name: str) -> torch.Tensor:
    """``(B, ndim, ndim + 1)`` or ``(B, ndim + 1, ndim + 1)`` -> ``(B, ndim + 1, ndim + 1)``.

    A 2D ``matrix`` gets a batch axis; a missing last row ``[0 .. 0 1]`` is appended. ``name``
    is used in the error raised for anything else.
    """
    if not isinstance(matrix, torch.Tensor) or not matrix.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point torch.Tensor, got {matrix!r:.60}.")
    if matrix.dim() == 2:
        matrix = matrix[None]
    rows_ok = matrix.dim() == 3 and matrix.shape[-2] in (ndim, ndim + 1)
    if not rows_ok or matrix.shape[-1] != ndim + 1:
        raise ValueError(
            f"{name}: expected shape (B, {ndim}, {ndim + 1}) or (B, {ndim + 1}, {ndim + 1}) for "
            f"{ndim} spatial axes, got {tuple(matrix.shape)}."
        )
    if matrix.shape[-2] == ndim:
        last = torch.zeros(matrix.shape[0], 1, ndim + 1, dtype=matrix.dtype, device=matrix.device)
        last[..., ndim] = 1.0
        matrix = torch.cat([matrix, last], dim=1)
    return matrix


def normalized_to_voxel_affine(theta: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Convert an affine in normalised coordinates to the project's voxel convention.

    Normalised coordinates follow ``align_corners=True`` (index ``i`` of ``n`` ->
    ``2 i / (n - 1) - 1``), so they are centred on the image and independent of its resolution;
    a network predicting ``theta`` there works at any size. The voxel matrix is
    ``A = S^-1 theta S``, where ``S`` maps voxel indices to normalised coordinates (an axis of a
    single voxel uses ``n - 1 = 1``).

    Parameters
    ----------
    theta : Tensor ``(B, ndim, ndim + 1)`` or ``(B, ndim + 1, ndim + 1)``
        Maps fixed normalised coordinates to moving normalised coordinates (array order).
    shape : sequence of int
        The spatial shape of the (common) grid.

    Returns
    -------
    Tensor ``(B, ndim + 1, ndim + 1)``: maps fixed voxel indices to moving voxel indices.

    Examples
    --------
    >>> theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])  # shift by a quarter extent
    >>> normalized_to_voxel_affine(theta, (9, 9))[0, 0, 2]
    tensor(2.)
    """
    return _conjugate(theta, shape, "theta", to_voxel=True)


def voxel_to_normalized_affine(matrix: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`normalized_to_voxel_affine`: ``theta = S A S^-1``.

    Parameters
    ----------
    matrix : Tensor ``(B, ndim + 1, ndim + 1)`` (or ``(B, ndim, ndim + 1)``)
        Maps fixed voxel indices to moving voxel indices.
    shape : sequence of int
        The spatial shape of the grid.

    Returns
    -------
    Tensor ``(B, ndim + 1, ndim + 1)`` in normalised coordinates.

    Examples
    --------
    >>> A = torch.eye(3)[None]; A[0, 1, 2] = 2.0
    >>> voxel_to_normalized_affine(A, (9, 9))[0, 1, 2]
    tensor(0.5000)
    """
    return _conjugate(matrix, shape, "matrix", to_voxel=False)


def _conjugate(matrix: torch.Tensor, shape: Sequence[int], name: str, *,
               to_voxel: bool) -> torch.Tensor:
    """``S^-1 M S`` (normalised -> voxel) or ``S M S^-1``, exactly the identity for ``M = I``."""
    ndim = len(shape)
    matrix = homogeneous(matrix, ndim, name)
    S, S_inv = _coordinate_maps(shape, matrix)
    left, right = (S_inv, S) if to_voxel else (S, S_inv)
    eye = torch.eye(ndim + 1, dtype=matrix.dtype, device=matrix.device)
    return eye + left @ (matrix - eye) @ right


def resize_labels(labels: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resize an integer label map ``(B, 1, *spatial)`` to ``shape`` (nearest neighbour, long).

    Examples
    --------
    >>> resize_labels(torch.tensor([[[[0, 1], [2, 3]]]]), (4, 4))[0, 0, :, 0].tolist()
    [0, 0, 2, 2]
    """
    shape = tuple(int(n) for n in shape)
    if tuple(labels.shape[2:]) == shape:
        return labels.long()
    return F.interpolate(labels.float(), size=shape, mode="nearest").round().long()


def network_input(image: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """What a network is fed: ``image`` ``(B, C, *spatial)`` normalised, then resized to ``shape``.

    Training (``data.source: folder``) and inference both call this, so the same image gives the
    same tensor on both paths.

    Examples
    --------
    >>> network_input(torch.arange(16.0).reshape(1, 1, 4, 4), (2, 2)).shape
    torch.Size([1, 1, 2, 2])
    """
    return resize_image(normalize_intensity(image), shape)
