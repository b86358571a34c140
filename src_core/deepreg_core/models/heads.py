"""Output heads: an affine regressor that starts at the identity and a dense flow head that starts
near zero."""

from __future__ import annotations

import torch
from torch import nn

from deepreg_core.models.blocks import conv_nd


class AffineHead(nn.Module):
    """Regress an affine matrix ``[I + dA | dt]`` from a feature map.

    The features are average-pooled to ``pool_size`` cells per axis (keeping a coarse layout
    whatever the input size), flattened, and mapped linearly to ``ndim * (ndim + 1)`` parameters.
    Weights and bias start at zero, so an untrained head returns exactly the identity.

    Parameters
    ----------
    ndim : int
        2 or 3 spatial axes.
    in_channels : int
        Channels of the feature map.
    pool_size : int
        Cells per axis after pooling.

    Returns
    -------
    torch.Tensor
        ``(B, ndim, ndim + 1)``: the top rows of a homogeneous matrix, in whatever coordinates the
        caller defines (:class:`~deepreg_core.models.AffineNet` uses normalised ones).

    Examples
    --------
    >>> head = AffineHead(2, in_channels=8)
    >>> torch.equal(head(torch.randn(1, 8, 4, 4)), torch.eye(2, 3)[None])
    True
    """

    def __init__(self, ndim: int, in_channels: int, pool_size: int = 2) -> None:
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim: expected 2 or 3 spatial dimensions, got {ndim!r}.")
        self.ndim = ndim
        pool = nn.AdaptiveAvgPool2d if ndim == 2 else nn.AdaptiveAvgPool3d
        self.pool = pool(pool_size)
        self.linear = nn.Linear(in_channels * pool_size**ndim, ndim * (ndim + 1))
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        identity = torch.eye(ndim, ndim + 1)
        self.register_buffer("identity", identity, persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, *spatial)`` features to ``(B, ndim, ndim + 1)``."""
        delta = self.linear(self.pool(features).flatten(1))
        return self.identity.to(delta.dtype) + delta.view(-1, self.ndim, self.ndim + 1)


class FlowHead(nn.Module):
    """A 3x3(x3) convolution to ``ndim`` channels: a displacement or velocity field in voxels.

    Weights are drawn from ``Normal(0, init_std)`` and the bias is zero, so an untrained head
    predicts a field of about ``1e-5`` voxels (VoxelMorph's initialisation).

    Parameters
    ----------
    ndim : int
        2 or 3 spatial axes.
    in_channels : int
        Channels of the feature map.
    init_std : float
        Standard deviation of the initial weights.

    Examples
    --------
    >>> head = FlowHead(3, in_channels=8)
    >>> head(torch.randn(1, 8, 4, 5, 6)).shape
    torch.Size([1, 3, 4, 5, 6])
    """

    def __init__(self, ndim: int, in_channels: int, init_std: float = 1e-5) -> None:
        super().__init__()
        self.ndim = ndim
        self.conv = conv_nd(ndim)(in_channels, ndim, kernel_size=3, padding=1)
        nn.init.normal_(self.conv.weight, mean=0.0, std=init_std)
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, *spatial)`` to a field ``(B, ndim, *spatial)`` in voxels."""
        return self.conv(features)


class CentroidHead(nn.Module):
    """An affine from matched feature centroids (keypoints), fitted by weighted least squares.

    A 1x1(x1) convolution maps each image's features to ``keypoints`` heat maps. Each map's
    spatial softmax gives a centroid (in normalised coordinates, array order) and its expected
    logit a confidence; the affine that carries the fixed image's centroids onto the moving
    image's is the weighted least-squares fit, pulled towards the identity by ``prior`` (relative
    to the total weight) so that it is defined for any input. The fit is exact for matched
    points, so the architecture is equivariant by construction: features that move with the
    anatomy give the transform whatever its size (the approach of SynthMorph's affine model and
    KeyMorph). An identical pair gives the identity up to rounding.

    Parameters
    ----------
    ndim : int
        2 or 3 spatial axes.
    in_channels : int
        Channels of the feature map of one image.
    keypoints : int
        Number of heat maps (at least ``ndim + 1``).
    prior : float
        Weight of the identity prior, relative to the summed keypoint weights.

    Examples
    --------
    >>> head = CentroidHead(2, in_channels=8, keypoints=6)
    >>> f = head.points(torch.randn(1, 8, 16, 16))
    >>> torch.allclose(head.fit(f, f), torch.eye(2, 3)[None], atol=1e-4)
    True
    """

    def __init__(self, ndim: int, in_channels: int, keypoints: int = 32,
                 prior: float = 1e-4) -> None:
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim: expected 2 or 3 spatial dimensions, got {ndim!r}.")
        if keypoints < ndim + 1:
            raise ValueError(f"keypoints: expected at least {ndim + 1}, got {keypoints!r}.")
        self.ndim = ndim
        self.prior = float(prior)
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        self.conv = conv(in_channels, keypoints, kernel_size=1)

    def points(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centroids ``(B, K, ndim)`` (normalised, array order) and weights ``(B, K)``."""
        logits = self.conv(features).flatten(2)  # (B, K, N)
        p = torch.softmax(logits, dim=-1)
        spatial = features.shape[2:]
        axes = [torch.linspace(-1.0, 1.0, n, dtype=p.dtype, device=p.device) for n in spatial]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, self.ndim)
        centroids = p @ grid
        weights = nn.functional.softplus((p * logits).sum(-1))
        return centroids, weights

    def fit(self, fixed: tuple[torch.Tensor, torch.Tensor],
            moving: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The ``(B, ndim, ndim + 1)`` affine taking fixed centroids to moving ones."""
        (cf, wf), (cm, wm) = fixed, moving
        w = torch.sqrt(wf * wm + 1e-12)  # (B, K)
        x = torch.cat([cf, torch.ones_like(cf[..., :1])], dim=-1)  # (B, K, ndim + 1)
        xtw = x.transpose(1, 2) * w[:, None, :]
        eye = torch.eye(self.ndim + 1, dtype=x.dtype, device=x.device)
        lam = self.prior * w.sum(-1).view(-1, 1, 1)
        lhs = xtw @ x + lam * eye
        rhs = xtw @ cm + lam * eye[:, : self.ndim]  # prior: A^T = [I; 0]
        return torch.linalg.solve(lhs, rhs).transpose(1, 2)
