"""Registration networks: blocks, a UNet backbone, heads, and the networks built from them.

``build_model(config)`` turns a :class:`ModelConfig` into a network; every network takes
``(fixed, moving)`` tensors ``(B, C, *spatial)`` on the same grid and returns a
:class:`RegistrationOutput`, and keeps its config as ``model.config``.

Examples
--------
>>> import torch
>>> model = build_model(ModelConfig(kind="deformable", ndim=2, features=[8, 16, 16]))
>>> out = model(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))
>>> out.displacement.shape
torch.Size([1, 2, 32, 32])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from deepreg_core.models.blocks import (
    ConvBlock,
    ConvEncoder,
    conv_nd,
    instance_norm_nd,
    max_pool_nd,
)
from deepreg_core.models.config import ModelConfig
from deepreg_core.models.global_local import GlobalLocalNet, SaliencyGate
from deepreg_core.models.heads import AffineHead, CentroidHead, FlowHead
from deepreg_core.models.registration import (
    AffineNet,
    DeformableNet,
    RegistrationOutput,
    VelocityIntegrator,
    normalized_to_voxel_affine,
    resize_image,
    voxel_to_normalized_affine,
    working_shape,
)
from deepreg_core.models.unet import UNet

__all__ = [
    "AffineHead",
    "CentroidHead",
    "AffineNet",
    "ConvBlock",
    "ConvEncoder",
    "DeformableNet",
    "FlowHead",
    "GlobalLocalNet",
    "ModelConfig",
    "RegistrationOutput",
    "SaliencyGate",
    "UNet",
    "VelocityIntegrator",
    "build_model",
    "conv_nd",
    "instance_norm_nd",
    "max_pool_nd",
    "normalized_to_voxel_affine",
    "resize_image",
    "voxel_to_normalized_affine",
    "working_shape",
]


def _integrator(config: ModelConfig) -> VelocityIntegrator | None:
    return VelocityIntegrator(config.integration_steps) if config.diffeomorphic else None


def _affine(config: ModelConfig) -> AffineNet:
    head: nn.Module
    if config.affine_head == "centroids":
        encoder: nn.Module = UNet(config.ndim, config.in_channels, config.affine_features, None,
                                  config.convs_per_level, config.instance_norm)
        head = CentroidHead(config.ndim, encoder.out_channels, config.keypoints)
    else:
        encoder = ConvEncoder(
            config.ndim, 2 * config.in_channels, config.affine_features, config.instance_norm
        )
        head = AffineHead(config.ndim, encoder.out_channels)
    return AffineNet(encoder, head, config.working_scale, symmetric=config.symmetric,
                     passes=config.passes, guard=config.pass_guard)


def _deformable(config: ModelConfig, in_channels: int, scale: float) -> DeformableNet:
    backbone = UNet(
        config.ndim,
        in_channels,
        config.features,
        config.resolved_decoder_features(),
        config.convs_per_level,
        config.instance_norm,
    )
    head = FlowHead(config.ndim, backbone.out_channels)
    return DeformableNet(backbone, head, _integrator(config), scale)


def _global_local(config: ModelConfig) -> GlobalLocalNet:
    coarse = _deformable(config, 2 * config.in_channels, config.global_scale)
    local = UNet(
        config.ndim,
        2 * config.in_channels + 1,
        config.local_features,
        None,
        config.convs_per_level,
        config.instance_norm,
    )
    return GlobalLocalNet(
        coarse,
        local,
        FlowHead(config.ndim, local.out_channels),
        _integrator(config),
        SaliencyGate() if config.saliency_gate else None,
        config.working_scale,
    )


def build_model(config: ModelConfig | Mapping[str, Any]) -> nn.Module:
    """Build the network a config describes; the result keeps it as ``model.config``.

    Parameters
    ----------
    config : ModelConfig or mapping
        A config, or its ``model_dump()`` (validated, so bad values raise
        ``pydantic.ValidationError`` naming the field).

    Returns
    -------
    AffineNet, DeformableNet or GlobalLocalNet
        Untrained: affine networks start at the identity, dense ones near a zero field.

    Examples
    --------
    >>> model = build_model({"kind": "affine", "ndim": 3})
    >>> type(model).__name__, model.config.ndim
    ('AffineNet', 3)
    """
    if not isinstance(config, ModelConfig):
        if not isinstance(config, Mapping):
            raise TypeError(
                f"config: expected a ModelConfig or a mapping of its fields, got "
                f"{type(config).__name__}."
            )
        config = ModelConfig.model_validate(dict(config))
    if config.kind == "affine":
        model: nn.Module = _affine(config)
    elif config.kind == "deformable":
        model = _deformable(config, 2 * config.in_channels, config.working_scale)
    else:
        model = _global_local(config)
    model.config = config
    return model
