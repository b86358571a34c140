"""Joint saliency of an image pair: where both images show the same local structure.

The joint saliency map is high where the fixed and the moving image both have strong edges
or texture *with the same local orientation*, and low where only one of them has structure
(an outlier such as a tumour, a resection or an artefact) or where both are flat. It is built
from structure tensors, which ignore the sign of the contrast, so it also suits multimodal
pairs. It can weight a similarity loss or reinforce a global-to-local registration network.

References
----------
Qin B., Gu Z., Sun X., Lv Y. "Registration of images with outliers using joint saliency
map", IEEE Signal Processing Letters 17(1), 2010.
"""

from __future__ import annotations

import torch

from deepreg_core._diff import gaussian_kernel, separable_filter, spatial_gradient
from deepreg_core._validate import check_image

__all__ = ["joint_saliency", "structure_tensor"]


def structure_tensor(image: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Gaussian-smoothed outer product of the image gradient, ``T = G_sigma * (grad I grad I^T)``.

    Parameters
    ----------
    image : torch.Tensor
        Float image ``(B, C, *spatial)``, 2 or 3 spatial axes; the tensors of the channels are
        summed.
    sigma : float
        Standard deviation of the Gaussian integration window, in voxels (>= 0; 0 means no
        smoothing). The filter is separable, with replicate padding.

    Returns
    -------
    torch.Tensor
        ``(B, ndim, ndim, *spatial)``, symmetric positive semi-definite per voxel, in
        intensity units squared per voxel squared. Gradients are central differences.

    Examples
    --------
    >>> img = torch.zeros(1, 1, 8, 8); img[..., 4:] = 1.0  # a vertical edge
    >>> t = structure_tensor(img, sigma=1.0)
    >>> bool(t[0, 1, 1].max() > 0), float(t[0, 0, 0].abs().max())
    (True, 0.0)
    """
    image = check_image(image, "image")
    sigma = _check_sigma(sigma)
    ndim = image.dim() - 2
    grad = spatial_gradient(image)  # (B, C, ndim, *spatial)
    pairs = [(i, j) for i in range(ndim) for j in range(i, ndim)]
    products = torch.stack([(grad[:, :, i] * grad[:, :, j]).sum(dim=1) for i, j in pairs], dim=1)
    if sigma > 0:
        products = separable_filter(products, gaussian_kernel(sigma), padding_mode="replicate")
    index = {pair: k for k, pair in enumerate(pairs)}
    rows = [
        torch.stack([products[:, index[(min(i, j), max(i, j))]] for j in range(ndim)], dim=1)
        for i in range(ndim)
    ]
    return torch.stack(rows, dim=1)


def joint_saliency(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    sigma: float = 1.5,
    quantile: float = 0.99,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Joint saliency map of two images on the same grid, in ``[0, 1]``, differentiable.

    For each image the structure tensor ``T`` (:func:`structure_tensor`) is divided by a
    detached scale, the ``quantile`` of its trace over the image, so that its saliency
    ``s = clamp(trace(T), 0, 1)`` is about 1 on the image's strong edges. The agreement
    ``a = <T_f, T_m>_F / (||T_f||_F ||T_m||_F)`` is 1 where the local orientations coincide
    (whatever the sign of the contrast) and falls towards 0 where they differ or one image is
    flat. The joint saliency is ``sqrt(s_f s_m) a``, clamped to ``[0, 1]``.

    Parameters
    ----------
    fixed, moving : torch.Tensor
        Float images ``(B, C, *spatial)`` with the same batch size and spatial shape (the
        channel counts may differ).
    sigma : float
        Integration scale of the structure tensors, in voxels.
    quantile : float
        In ``(0, 1]``: the trace quantile that maps to saliency 1 (1.0 uses the maximum).
    eps : float
        Stabiliser of the agreement and of the square root (both in normalised units).

    Returns
    -------
    torch.Tensor
        ``(B, 1, *spatial)`` in ``[0, 1]``; exactly 0 where both images are constant.

    References
    ----------
    Qin B., Gu Z., Sun X., Lv Y. "Registration of images with outliers using joint saliency
    map", IEEE Signal Processing Letters 17(1), 2010.

    Examples
    --------
    >>> square = torch.zeros(1, 1, 32, 32); square[..., 8:24, 8:24] = 1.0
    >>> js = joint_saliency(square, 1.0 - square)  # same edges, inverted contrast
    >>> bool(js.max() > 0.9), bool(js.min() >= 0)
    (True, True)
    """
    fixed = check_image(fixed, "fixed")
    moving = check_image(moving, "moving")
    if (
        fixed.dim() != moving.dim()
        or fixed.shape[0] != moving.shape[0]
        or (fixed.shape[2:] != moving.shape[2:])
    ):
        raise ValueError(
            f"fixed and moving: expected the same batch size and spatial shape, got "
            f"{tuple(fixed.shape)} and {tuple(moving.shape)}. Resample one onto the other's "
            "grid first (deepreg_core.spatial.resample_to)."
        )
    if not (isinstance(quantile, (int, float)) and 0 < quantile <= 1):
        raise ValueError(f"quantile: expected a number in (0, 1], got {quantile!r}.")
    t_fixed = structure_tensor(fixed, sigma)
    t_moving = structure_tensor(moving, sigma)
    return _combine(
        t_fixed, t_moving, _trace_scale(t_fixed, quantile), _trace_scale(t_moving, quantile), eps
    )


def _check_sigma(sigma: object) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma < 1e6:
        raise ValueError(f"sigma: expected a finite number >= 0 (voxels), got {sigma!r}.")
    return float(sigma)


def _trace(t: torch.Tensor) -> torch.Tensor:
    """Trace of ``(B, ndim, ndim, *spatial)`` as ``(B, 1, *spatial)``."""
    return torch.diagonal(t, dim1=1, dim2=2).sum(dim=-1).unsqueeze(1)


def _trace_scale(t: torch.Tensor, quantile: float) -> torch.Tensor:
    """Detached per-image ``quantile`` of the trace, ``(B,)``, never below the smallest float."""
    trace = _trace(t.detach()).flatten(1)
    k = max(1, min(trace.shape[1], round(quantile * trace.shape[1])))
    scale = trace.kthvalue(k, dim=1).values
    return scale.clamp_min(torch.finfo(t.dtype).tiny)


def _combine(
    t_fixed: torch.Tensor,
    t_moving: torch.Tensor,
    scale_fixed: torch.Tensor,
    scale_moving: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Joint saliency from two structure tensors and their (constant) trace scales ``(B,)``."""
    shape = (-1,) + (1,) * (t_fixed.dim() - 1)
    t_fixed = t_fixed / scale_fixed.view(shape)
    t_moving = t_moving / scale_moving.view(shape)
    s_fixed = _trace(t_fixed).clamp(0, 1)
    s_moving = _trace(t_moving).clamp(0, 1)
    inner = (t_fixed * t_moving).sum(dim=(1, 2)).unsqueeze(1)
    norms_sq = t_fixed.pow(2).sum(dim=(1, 2)) * t_moving.pow(2).sum(dim=(1, 2))
    agreement = inner / torch.sqrt(norms_sq.unsqueeze(1) + eps**2)
    strength = torch.sqrt(s_fixed * s_moving + eps**2) - eps
    return (strength * agreement).clamp(0, 1)
