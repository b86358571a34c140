"""Registration networks built by composition, and their named output.

A network takes ``(fixed, moving)``, both ``(B, C, *spatial)`` on the same grid, and returns a
:class:`RegistrationOutput`. Its parts are passed in, not switched on by flags:
:class:`DeformableNet` = backbone + flow head + optional :class:`VelocityIntegrator`;
:class:`AffineNet` = encoder + :class:`~deepreg_core.models.heads.AffineHead`.
Displacements follow ``docs/conventions.md``: ``(B, ndim, *spatial)``, in voxels of the fixed grid,
``warped(x) = moving(x + u(x))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from deepreg_core._validate import check_image, check_same_spatial
from deepreg_core.models.heads import CentroidHead
from deepreg_core.preprocess import (  # noqa: F401  (re-exported by deepreg_core.models)
    homogeneous,
    normalized_to_voxel_affine,
    resize_image,
    voxel_to_normalized_affine,
    working_shape,
)
from deepreg_core.spatial import (
    affine_to_displacement,
    integrate_velocity,
    resize_displacement,
    warp,
    warp_affine,
)

if TYPE_CHECKING:
    from deepreg_core.models.config import ModelConfig
    from deepreg_core.models.heads import FlowHead
    from deepreg_core.models.unet import UNet


@dataclass(frozen=True)
class RegistrationOutput:
    """What every registration network returns. All fields are on the fixed image's grid.

    Attributes
    ----------
    warped : Tensor ``(B, C, *spatial)``
        The moving image warped onto the fixed one.
    displacement : Tensor ``(B, ndim, *spatial)``
        The transform ``phi(x) = x + u(x)`` (fixed voxel -> moving voxel), in voxels.
    velocity : Tensor ``(B, ndim, *spatial)`` or None
        The stationary velocity field of a diffeomorphic network (``u = exp(v)``), in voxels.
    affine : Tensor ``(B, ndim + 1, ndim + 1)`` or None
        An affine network's matrix mapping fixed voxel indices to moving voxel indices.
    saliency : Tensor ``(B, 1, *spatial)`` or None
        The joint saliency map in ``[0, 1]`` (global-to-local network), for weighting the loss.
    coarse_displacement : Tensor ``(B, ndim, *spatial)`` or None
        The global network's field before local refinement (global-to-local network), in voxels.
    """

    warped: torch.Tensor
    displacement: torch.Tensor
    velocity: torch.Tensor | None = None
    affine: torch.Tensor | None = None
    saliency: torch.Tensor | None = None
    coarse_displacement: torch.Tensor | None = None


# ----------------------------------------------------------------------------- helpers


def check_pair(
    fixed: object, moving: object, ndim: int, in_channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a ``(fixed, moving)`` pair for a network of ``ndim`` axes and ``in_channels``."""
    fixed = check_image(fixed, "fixed", ndim=ndim)
    moving = check_image(moving, "moving", ndim=ndim)
    check_same_spatial(fixed, moving, "fixed", "moving")
    for name, image in (("fixed", fixed), ("moving", moving)):
        if image.shape[1] != in_channels:
            raise ValueError(
                f"{name}: expected {in_channels} channel(s) as the model was built with "
                f"in_channels={in_channels}, got {image.shape[1]} (shape {tuple(image.shape)})."
            )
    if fixed.shape[0] != moving.shape[0]:
        raise ValueError(
            f"fixed and moving: expected equal batch sizes, got {fixed.shape[0]} and "
            f"{moving.shape[0]}."
        )
    if fixed.dtype != moving.dtype or fixed.device != moving.device:
        raise ValueError(
            f"fixed and moving: expected the same dtype and device, got {fixed.dtype} on "
            f"{fixed.device} and {moving.dtype} on {moving.device}."
        )
    return fixed, moving


# ----------------------------------------------------------------------------- modules


class VelocityIntegrator(nn.Module):
    """Turn a stationary velocity field into a displacement by scaling and squaring.

    Parameters
    ----------
    steps : int
        Number of squarings (the velocity is divided by ``2**steps``).

    Examples
    --------
    >>> VelocityIntegrator(7)(torch.zeros(1, 2, 8, 8)).abs().max()
    tensor(0.)
    """

    def __init__(self, steps: int = 7) -> None:
        super().__init__()
        self.steps = steps

    def forward(self, velocity: torch.Tensor) -> torch.Tensor:
        """``(B, ndim, *spatial)`` velocity -> displacement of ``exp(v)``, both in voxels."""
        return integrate_velocity(velocity, steps=self.steps)

    def extra_repr(self) -> str:  # noqa: D102
        return f"steps={self.steps}"


def matrix_sqrt(matrix: torch.Tensor, iterations: int = 12) -> torch.Tensor:
    """Principal square root of matrices near the identity (Denman–Beavers iteration).

    ``matrix`` is ``(B, n, n)``; differentiable. Converges quadratically for matrices without
    eigenvalues on the closed negative real axis (any affine of a registration). For the
    identity it returns the identity exactly.

    References
    ----------
    Denman and Beavers, "The matrix sign function and computations in systems", 1976.
    """
    y = matrix
    z = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device).expand_as(matrix)
    for _ in range(iterations):
        y, z = 0.5 * (y + torch.linalg.inv(z)), 0.5 * (z + torch.linalg.inv(y))
    return y


class AffineNet(nn.Module):
    """Affine registration: a CNN and an affine head, optionally cascaded.

    Two heads. :class:`AffineHead` (``"regression"``): a strided encoder reads
    ``concat(fixed, moving)`` and the head regresses the matrix. :class:`CentroidHead`
    (``"centroids"``): one feature network reads each image alone (shared weights), each image
    gives keypoint centroids, and the matrix is their weighted least-squares fit.
    The matrix ``theta`` is in normalised coordinates (resolution-agnostic, centred on the
    image), converted with :func:`normalized_to_voxel_affine` for the output. An untrained
    regression network returns exactly the identity.

    Parameters
    ----------
    encoder : ConvEncoder or UNet
        Takes ``2 * C`` channels (regression) or ``C`` channels (centroids).
    head : AffineHead or CentroidHead
        Reads ``encoder.out_channels`` channels.
    working_scale : float
        The encoder sees the images resized by this factor (``0 < s <= 1``).
    symmetric : bool
        ``sqrt(A_fm A_mf^-1)``: exactly the identity for an identical pair and the inverse when
        the inputs are swapped.
    passes : int
        Evaluation mode applies the estimate this many times, each on the moving image resampled
        by the transform so far, composing the results; training uses one pass.
    guard : bool
        Evaluation mode keeps a pass only if it raises the pair's mutual information on the
        working grid (from the identity on): never a worse match than the input by that measure.

    Examples
    --------
    >>> from deepreg_core.models import AffineHead, ConvEncoder
    >>> net = AffineNet(ConvEncoder(2, 2, [8, 16]), AffineHead(2, 16))
    >>> out = net(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))
    >>> out.affine.shape, out.displacement.shape
    (torch.Size([1, 3, 3]), torch.Size([1, 2, 32, 32]))
    """

    config: ModelConfig | None = None

    def __init__(self, encoder: nn.Module, head: nn.Module, working_scale: float = 1.0, *,
                 symmetric: bool = False, passes: int = 1, guard: bool = False) -> None:
        super().__init__()
        working_shape((4,), working_scale)  # validates the scale
        if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
            raise ValueError(f"passes: expected an integer >= 1, got {passes!r}.")
        self.encoder = encoder
        self.head = head
        self.working_scale = working_scale
        self.symmetric = symmetric
        self.passes = passes
        self.guard = guard
        self.ndim = encoder.ndim
        self.centroids = isinstance(head, CentroidHead)
        self.in_channels = encoder.in_channels if self.centroids else encoder.in_channels // 2

    def _points(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head.points(self.encoder(image))

    def _cascade(self, fixed: torch.Tensor, moving: torch.Tensor,
                 fixed_points: tuple[torch.Tensor, torch.Tensor] | None,
                 work: tuple[int, ...]) -> torch.Tensor:
        """``passes`` estimates, each on the moving image as the transform so far leaves it.

        With ``guard``, a pass is kept (per pair) only if it raises the mutual information of
        the pair on the working grid, starting from the identity: the network's result then
        never matches worse than the unregistered pair by that measure.
        """
        from deepreg_core.losses import mutual_information

        def score(moved: torch.Tensor) -> torch.Tensor:
            return torch.stack([mutual_information(fixed[i:i + 1], moved[i:i + 1])
                                for i in range(fixed.shape[0])])

        batch = fixed.shape[0]
        theta = torch.eye(self.ndim + 1, dtype=fixed.dtype, device=fixed.device).repeat(batch, 1,
                                                                                        1)
        moved = moving
        best = score(moving) if self.guard else None
        for _ in range(self.passes):
            proposal = theta @ self._theta(fixed, moved, fixed_points)
            candidate = warp_affine(moving, normalized_to_voxel_affine(proposal, work))
            if best is None:
                theta, moved = proposal, candidate
                continue
            value = score(candidate)
            better = value > best
            theta = torch.where(better.view(-1, 1, 1), proposal, theta)
            moved = torch.where(better.view(-1, *[1] * (moving.dim() - 1)), candidate, moved)
            best = torch.where(better, value, best)
        return theta

    def _theta(self, fixed: torch.Tensor, moving: torch.Tensor,
               fixed_points: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """One estimate on the working grid, ``(B, ndim + 1, ndim + 1)`` normalised."""
        if self.centroids:
            pf = fixed_points if fixed_points is not None else self._points(fixed)
            pm = self._points(moving)
            forward = self.head.fit(pf, pm)
            backward = self.head.fit(pm, pf) if self.symmetric else None
        else:
            x = torch.cat([fixed, moving], dim=1)
            forward = self.head(self.encoder(x))
            backward = (self.head(self.encoder(x.roll(self.in_channels, dims=1)))
                        if self.symmetric else None)
        theta = homogeneous(forward, self.ndim, "theta")
        if backward is not None:  # sqrt(A_fm A_mf^-1): identity for x == y, inverse if swapped
            theta = matrix_sqrt(theta @ torch.linalg.inv(homogeneous(backward, self.ndim,
                                                                      "theta")))
        return theta

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> RegistrationOutput:
        """Register ``moving`` to ``fixed``, both ``(B, C, *spatial)`` on the same grid."""
        fixed, moving = check_pair(fixed, moving, self.ndim, self.in_channels)
        shape = tuple(fixed.shape[2:])
        work = working_shape(shape, self.working_scale)
        fixed_work, moving_work = resize_image(fixed, work), resize_image(moving, work)
        fixed_points = self._points(fixed_work) if self.centroids else None
        if self.training:  # one pass, no guard: the loss sees the network's own estimate
            theta = self._theta(fixed_work, moving_work, fixed_points)
        else:
            theta = self._cascade(fixed_work, moving_work, fixed_points, work)
        affine = normalized_to_voxel_affine(theta, shape)
        displacement = affine_to_displacement(affine, shape)
        return RegistrationOutput(
            warped=warp(moving, displacement), displacement=displacement, affine=affine
        )


class DeformableNet(nn.Module):
    """Dense registration: backbone -> flow head -> (integrator) -> resize -> warp.

    The backbone sees ``concat(fixed, moving)`` resized by ``working_scale``; the head predicts a
    displacement there (or a velocity, when an integrator is given, integrated at that
    resolution); the field is then resized to the input grid with
    :func:`~deepreg_core.spatial.resize_displacement` and the moving image is warped by it.

    Parameters
    ----------
    backbone : UNet
        Takes ``2 * C`` channels, keeps the spatial size.
    head : FlowHead
        Reads ``backbone.out_channels`` channels.
    integrator : VelocityIntegrator or None
        Makes the network diffeomorphic (the head then predicts a velocity).
    working_scale : float
        ``0 < s <= 1``; ``0.5`` runs the network on a grid half the size along each axis.

    Examples
    --------
    >>> from deepreg_core.models import FlowHead, UNet
    >>> net = DeformableNet(UNet(3, 2, [4, 8]), FlowHead(3, 4), VelocityIntegrator(7), 0.5)
    >>> net(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)).displacement.shape
    torch.Size([1, 3, 16, 16, 16])
    """

    config: ModelConfig | None = None

    def __init__(
        self,
        backbone: UNet,
        head: FlowHead,
        integrator: VelocityIntegrator | None = None,
        working_scale: float = 1.0,
    ) -> None:
        super().__init__()
        working_shape((4,), working_scale)  # validates the scale
        self.backbone = backbone
        self.head = head
        self.integrator = integrator
        self.working_scale = working_scale
        self.ndim = backbone.ndim
        self.in_channels = backbone.in_channels // 2

    def predict_field(
        self, inputs: torch.Tensor, shape: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run backbone, head and integrator on ``inputs`` resized by the working scale.

        Parameters
        ----------
        inputs : Tensor ``(B, backbone.in_channels, *spatial)``
            Already validated network input.
        shape : sequence of int
            The grid (over the same extent as ``inputs``) to return the fields on.

        Returns
        -------
        (displacement, velocity)
            Both ``(B, ndim, *shape)`` in voxels of that grid; velocity is None without an
            integrator.
        """
        shape = tuple(shape)
        x = resize_image(inputs, working_shape(inputs.shape[2:], self.working_scale))
        field = self.head(self.backbone(x))
        velocity = None
        if self.integrator is not None:
            velocity, field = field, self.integrator(field)
        if tuple(field.shape[2:]) != shape:
            field = resize_displacement(field, shape)
            if velocity is not None:
                velocity = resize_displacement(velocity, shape)
        return field, velocity

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> RegistrationOutput:
        """Register ``moving`` to ``fixed``, both ``(B, C, *spatial)`` on the same grid."""
        fixed, moving = check_pair(fixed, moving, self.ndim, self.in_channels)
        shape = tuple(fixed.shape[2:])
        displacement, velocity = self.predict_field(torch.cat([fixed, moving], dim=1), shape)
        return RegistrationOutput(
            warped=warp(moving, displacement), displacement=displacement, velocity=velocity
        )
