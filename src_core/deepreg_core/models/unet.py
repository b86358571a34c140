"""A VoxelMorph-like UNet backbone for 2D and 3D images of any size.

References
----------
Balakrishnan, G. et al. "VoxelMorph: A Learning Framework for Deformable Medical Image
Registration." IEEE TMI 38(8), 2019.
Ronneberger, O. et al. "U-Net: Convolutional Networks for Biomedical Image Segmentation."
MICCAI 2015.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deepreg_core.models.blocks import ConvBlock, max_pool_nd


def _stage(
    ndim: int, in_channels: int, out_channels: int, n_convs: int, instance_norm: bool
) -> nn.Sequential:
    widths = [in_channels] + [out_channels] * n_convs
    return nn.Sequential(
        *(
            ConvBlock(ndim, c_in, c_out, instance_norm=instance_norm)
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        )
    )


class UNet(nn.Module):
    """Encoder/decoder with skip connections; the output keeps the input's spatial size.

    Level ``i`` of the encoder has ``features[i]`` channels at ``1 / 2**i`` of the input size
    (max-pooling with ``ceil_mode``, so odd sizes are fine). The decoder up-samples (nearest) to the
    exact size of the matching skip connection, concatenates it and applies ``convs_per_level``
    blocks of ``decoder_features[j]`` channels; any size, divisible by ``2**levels`` or not, works.

    Parameters
    ----------
    ndim : int
        2 or 3 spatial axes.
    in_channels : int
        Input channels (e.g. ``2 * C`` for fixed and moving concatenated).
    features : sequence of int
        Encoder widths, finest level first; ``len(features)`` levels.
    decoder_features : sequence of int or None
        ``len(features) - 1`` decoder widths, coarsest first; ``None`` mirrors the encoder
        (``features[-2::-1]``).
    convs_per_level : int
        Convolution blocks per level.
    instance_norm : bool
        Use InstanceNorm in the blocks.

    Attributes
    ----------
    out_channels : int
        Channels of the output: ``decoder_features[-1]`` (``features[0]`` with one level).

    Examples
    --------
    >>> net = UNet(2, in_channels=2, features=[8, 16, 16])
    >>> net(torch.zeros(1, 2, 30, 34)).shape
    torch.Size([1, 8, 30, 34])
    """

    def __init__(
        self,
        ndim: int,
        in_channels: int,
        features: Sequence[int],
        decoder_features: Sequence[int] | None = None,
        convs_per_level: int = 1,
        instance_norm: bool = False,
    ) -> None:
        super().__init__()
        features = list(features)
        if not features:
            raise ValueError("features: expected at least one encoder width, got [].")
        decoder = list(features[-2::-1]) if decoder_features is None else list(decoder_features)
        if len(decoder) != len(features) - 1:
            raise ValueError(
                f"decoder_features: expected {len(features) - 1} widths (len(features) - 1), "
                f"got {len(decoder)}."
            )
        self.ndim = ndim
        self.in_channels = in_channels
        self.pool = max_pool_nd(ndim)(kernel_size=2, ceil_mode=True)
        widths = [in_channels, *features]
        self.encoder = nn.ModuleList(
            _stage(ndim, c_in, c_out, convs_per_level, instance_norm)
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.decoder = nn.ModuleList()
        below = features[-1]
        for skip, width in zip(features[-2::-1], decoder, strict=True):
            self.decoder.append(_stage(ndim, below + skip, width, convs_per_level, instance_norm))
            below = width
        self.out_channels = below

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, *spatial)`` to ``(B, out_channels, *spatial)``."""
        skips: list[torch.Tensor] = []
        for level, stage in enumerate(self.encoder):
            if level > 0:
                x = self.pool(x)
            x = stage(x)
            skips.append(x)
        skips.pop()  # the bottleneck is x itself
        for stage in self.decoder:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = stage(torch.cat([x, skip], dim=1))
        return x
