"""A global-to-local network whose refinement is guided by a joint saliency map.

After Qin et al. ("Unsupervised Global To Local Nonrigid Image Registration Network
Bidirectionally Reinforced By Joint Saliency Map", github.com/yf817/ThesisWork):

1. a global :class:`~deepreg_core.models.DeformableNet`, run at a coarse scale, estimates a coarse
   field ``u_g`` and the moving image is warped by it;
2. the joint saliency ``JS = joint_saliency(fixed, warped_coarse)`` (in ``[0, 1]``) marks where
   salient structures of both images agree, i.e. where the coarse vectors can be trusted;
3. a local UNet on ``concat(fixed, warped_coarse, JS)`` predicts a residual ``r``, scaled by a
   learnt gate ``g(JS)`` that starts closed where ``JS`` is high, so trustworthy coarse vectors are
   kept and the rest corrected; the final field is ``compose(u_g, r)`` (``u_g`` then ``r``).

Steps 2 and 3 and the composition run on the local network's grid (the input resized by
``working_scale``), so with ``working_scale < 1`` no full-resolution saliency or composition is
computed; the fields and the saliency map are then resized to the input grid. Keep
``global_scale <= working_scale``: the coarse field is handed over on the local grid.

Gradients flow through ``JS`` into the global network (the paper's "bidirectional
reinforcement"); the saliency map is returned so the training engine can weight its loss by it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from deepreg_core.models.registration import (
    DeformableNet,
    RegistrationOutput,
    VelocityIntegrator,
    check_pair,
    resize_image,
    working_shape,
)
from deepreg_core.saliency import joint_saliency
from deepreg_core.spatial import compose, resize_displacement, warp

if TYPE_CHECKING:
    from deepreg_core.models.config import ModelConfig
    from deepreg_core.models.heads import FlowHead
    from deepreg_core.models.unet import UNet


class SaliencyGate(nn.Module):
    """Per-voxel weight ``g = sigmoid(bias + slope * JS)`` in ``(0, 1)`` for the local residual.

    With the default initialisation (``slope = -4``, ``bias = 2``) the gate is about 0.88 where the
    joint saliency is 0 and 0.12 where it is 1; both scalars are learnt.

    Examples
    --------
    >>> gate = SaliencyGate()
    >>> gate(torch.tensor([[[[0.0, 1.0]]]])).detach().round(decimals=2)
    tensor([[[[0.8800, 0.1200]]]])
    """

    def __init__(self, slope: float = -4.0, bias: float = 2.0) -> None:
        super().__init__()
        self.slope = nn.Parameter(torch.tensor(float(slope)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    def forward(self, saliency: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *spatial)`` saliency in ``[0, 1]`` -> gate of the same shape."""
        slope, bias = self.slope.to(saliency.dtype), self.bias.to(saliency.dtype)
        return torch.sigmoid(bias + slope * saliency)


class GlobalLocalNet(nn.Module):
    """Coarse global registration refined by a saliency-guided local network.

    Parameters
    ----------
    global_net : DeformableNet
        The coarse network (give it a small ``working_scale``, e.g. 0.5 or 0.25).
    local_backbone : UNet
        Takes ``2 * C + 1`` channels: fixed, coarsely warped moving, joint saliency.
    local_head : FlowHead
        Predicts the residual (small initialisation, so the network starts at ``u_g``).
    integrator : VelocityIntegrator or None
        Integrate the residual as a stationary velocity (diffeomorphic refinement).
    gate : SaliencyGate or None
        Scale the residual by ``gate(JS)`` before integration; None keeps it as predicted.
    working_scale : float
        Scale of the local network relative to the input (``0 < s <= 1``).

    Returns
    -------
    RegistrationOutput
        ``displacement = compose(u_g, r)``, ``coarse_displacement = u_g``, ``saliency = JS``
        (``(B, 1, *spatial)``); ``velocity`` is None (the two fields are not one velocity).

    Examples
    --------
    >>> from deepreg_core.models import FlowHead, UNet
    >>> coarse = DeformableNet(UNet(2, 2, [4, 8]), FlowHead(2, 4), working_scale=0.5)
    >>> net = GlobalLocalNet(coarse, UNet(2, 3, [4, 8]), FlowHead(2, 4), gate=SaliencyGate())
    >>> out = net(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))
    >>> out.saliency.shape, out.coarse_displacement.shape
    (torch.Size([1, 1, 32, 32]), torch.Size([1, 2, 32, 32]))
    """

    config: ModelConfig | None = None

    def __init__(
        self,
        global_net: DeformableNet,
        local_backbone: UNet,
        local_head: FlowHead,
        integrator: VelocityIntegrator | None = None,
        gate: SaliencyGate | None = None,
        working_scale: float = 1.0,
    ) -> None:
        super().__init__()
        working_shape((4,), working_scale)  # validates the scale
        if local_backbone.in_channels != 2 * global_net.in_channels + 1:
            raise ValueError(
                f"local_backbone: expected {2 * global_net.in_channels + 1} input channels "
                f"(fixed, warped moving and saliency for {global_net.in_channels}-channel "
                f"images), got {local_backbone.in_channels}."
            )
        self.global_net = global_net
        self.local_backbone = local_backbone
        self.local_head = local_head
        self.integrator = integrator
        self.gate = gate
        self.working_scale = working_scale
        self.ndim = global_net.ndim
        self.in_channels = global_net.in_channels

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> RegistrationOutput:
        """Register ``moving`` to ``fixed``, both ``(B, C, *spatial)`` on the same grid."""
        fixed, moving = check_pair(fixed, moving, self.ndim, self.in_channels)
        shape = tuple(fixed.shape[2:])
        local_shape = working_shape(shape, self.working_scale)
        pair = torch.cat([fixed, moving], dim=1)
        # everything up to the final warp runs on the local network's (working) grid
        coarse, _ = self.global_net.predict_field(pair, local_shape)
        fixed_w, moving_w = resize_image(pair, local_shape).split(self.in_channels, dim=1)
        warped_coarse = warp(moving_w, coarse)
        saliency = joint_saliency(fixed_w, warped_coarse)

        x = torch.cat([fixed_w, warped_coarse, saliency], dim=1)
        residual = self.local_head(self.local_backbone(x))
        if self.gate is not None:
            residual = self.gate(saliency) * residual
        if self.integrator is not None:
            residual = self.integrator(residual)
        displacement = compose(coarse, residual)

        if local_shape != shape:
            displacement = resize_displacement(displacement, shape)
            coarse = resize_displacement(coarse, shape)
            saliency = resize_image(saliency, shape)
        return RegistrationOutput(
            warped=warp(moving, displacement),
            displacement=displacement,
            saliency=saliency,
            coarse_displacement=coarse,
        )
