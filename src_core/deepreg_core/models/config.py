"""Typed, bounded configuration of the registration networks.

A :class:`ModelConfig` is all that is needed to rebuild a network (``build_model(config)``); it is
saved next to the weights in every checkpoint, so it must stay JSON/YAML-serialisable
(``config.model_dump()``) and reject unknown or out-of-range values (``extra="forbid"``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Width = Annotated[int, Field(ge=1, le=1024)]
"""A number of feature channels."""

Widths = Annotated[list[Width], Field(min_length=1, max_length=7)]
"""Feature widths, one per level."""


class ModelConfig(BaseModel):
    """Architecture of a registration network.

    Parameters
    ----------
    kind : {"affine", "deformable", "global_local"}
        ``"affine"``: :class:`~deepreg_core.models.AffineNet` (a CNN regressing an affine matrix).
        ``"deformable"``: :class:`~deepreg_core.models.DeformableNet` (a UNet predicting a dense
        field).
        ``"global_local"``: :class:`~deepreg_core.models.GlobalLocalNet` (a coarse deformable
        network refined by a local network that sees the joint saliency map).
    ndim : {2, 3}
        Number of spatial axes of the images.
    in_channels : int
        Channels of *each* image (fixed and moving alike); the networks see both concatenated.
    features : list of int
        Encoder widths of the UNet, one per resolution level (level ``i`` runs at ``1 / 2**i`` of
        the working resolution). For ``"global_local"`` this is the global (coarse) network.
    decoder_features : list of int or None
        Decoder widths, one per up-sampling step (``len(features) - 1`` values), from the coarsest
        level to the finest. ``None`` mirrors the encoder: ``features[-2::-1]``.
    convs_per_level : int
        Convolution blocks per encoder/decoder level.
    instance_norm : bool
        Put an ``InstanceNorm`` between each convolution and its LeakyReLU.
    diffeomorphic : bool
        Predict a stationary velocity field and integrate it by scaling and squaring, which gives
        (nearly) fold-free transforms. Ignored by ``"affine"``.
    integration_steps : int
        Scaling-and-squaring steps (the velocity is divided by ``2**steps``); 0 uses the velocity as
        the displacement.
    working_scale : float
        The network runs on the inputs resized by this factor (``0 < s <= 1``) and its field is
        resized back to the input grid, so ``0.5`` makes a 3D network about 8 times cheaper.
        For ``"global_local"`` it is the scale of the local (refinement) network.
    affine_features : list of int
        ``"affine"``: widths of the strided-convolution encoder (regression head: each level
        halves the size) or of the feature UNet (centroid head).
    pass_guard : bool
        Affine, inference: keep each pass only if it raises the pair's mutual information on the
        working grid, starting from the identity (the network never returns a worse match than
        the unregistered pair by that measure).
    affine_head : {"regression", "centroids"}
        ``"affine"``: regress the matrix from both images at once, or fit it to matched keypoint
        centroids of each image (equivariant by construction; see :class:`CentroidHead`).
    keypoints : int
        Centroid head: number of keypoint heat maps.
    global_scale : float
        ``"global_local"`` only: the scale, relative to the input, of the coarse global network.
    local_features : list of int
        ``"global_local"`` only: encoder widths of the local refinement UNet (mirrored decoder).
    symmetric : bool
        Affine: estimate ``fixed→moving`` and ``moving→fixed`` and return
        ``sqrt(A_fm A_mf^-1)``, which is exactly the identity for an identical pair and exactly
        inverse-consistent when the inputs are swapped.
    passes : int
        Affine: at inference (evaluation mode) the network is applied this many times, each pass
        to the moving image resampled by the transform so far, and the estimates are composed
        (a coarse-to-fine cascade with shared weights). Training runs one pass: the later passes
        see the small residual misalignments that the training range covers anyway.
    saliency_gate : bool
        ``"global_local"`` only: scale the local residual by a learnt function of the joint
        saliency, so that coarse vectors where the images already agree are kept.

    Examples
    --------
    >>> config = ModelConfig(kind="deformable", ndim=3, working_scale=0.5)
    >>> ModelConfig.model_validate(config.model_dump()) == config
    True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["affine", "deformable", "global_local"] = "deformable"
    ndim: Literal[2, 3] = 2
    in_channels: int = Field(1, ge=1, le=16)
    features: Widths = Field(default_factory=lambda: [16, 32, 32, 32])
    decoder_features: Widths | None = None
    convs_per_level: int = Field(1, ge=1, le=4)
    instance_norm: bool = False
    diffeomorphic: bool = True
    integration_steps: int = Field(7, ge=0, le=12)
    working_scale: float = Field(1.0, gt=0.0, le=1.0)
    affine_features: Widths = Field(default_factory=lambda: [16, 32, 64, 64])
    global_scale: float = Field(0.5, gt=0.0, le=1.0)
    local_features: Widths = Field(default_factory=lambda: [16, 32, 32])
    saliency_gate: bool = True
    symmetric: bool = True
    passes: int = Field(1, ge=1, le=8)
    affine_head: Literal["regression", "centroids"] = "regression"
    pass_guard: bool = True
    keypoints: int = Field(32, ge=4, le=1024)

    @model_validator(mode="after")
    def _decoder_matches_encoder(self) -> ModelConfig:
        expected = len(self.features) - 1
        if self.decoder_features is not None and len(self.decoder_features) != expected:
            raise ValueError(
                f"decoder_features: expected {len(self.features) - 1} values (one per up-sampling "
                f"step, len(features) - 1), got {len(self.decoder_features)}. "
                "Use None to mirror the encoder."
            )
        return self

    def resolved_decoder_features(self) -> list[int]:
        """Decoder widths with the ``None`` default expanded (``features[-2::-1]``)."""
        if self.decoder_features is not None:
            return list(self.decoder_features)
        return list(self.features[-2::-1])
