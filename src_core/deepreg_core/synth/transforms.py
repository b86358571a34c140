"""Random smooth velocity fields and random affines, each sampled from a generator and replayable."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from deepreg_core.spatial import rotation_matrix
from deepreg_core.synth._common import (
    GeneratorLike,
    as_generator,
    check_shape,
    non_negative,
    positive,
    smooth_noise,
    uniform,
)

# ----------------------------------------------------------------------------- transforms


def random_velocity(
    shape: Sequence[int], generator: GeneratorLike, max_std: float = 2.0,
    smoothness: float | None = None,
) -> torch.Tensor:
    """A smooth random stationary velocity field (SVF), in voxels.

    The standard deviation (over voxels and components) is drawn from ``U(0, max_std)``; the
    field varies over about ``smoothness`` voxels. ``exp(v)`` (:func:`~deepreg_core.spatial.
    integrate_velocity`) is then a diffeomorphism.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape, array order.
    generator : torch.Generator or int
    max_std : float
        Largest standard deviation of the field, voxels (>= 0).
    smoothness : float, optional
        Spacing of the random control points in voxels (default ``min(shape) / 4``).

    Returns
    -------
    Tensor ``(1, ndim, *shape)``, float32, in voxels.

    Examples
    --------
    >>> v = random_velocity((32, 32), generator=0, max_std=3.0)
    >>> v.shape, float(v.std()) <= 3.0
    (torch.Size([1, 2, 32, 32]), True)
    """
    shape = check_shape(shape)
    max_std = non_negative(max_std, "max_std")
    smoothness = positive(min(shape) / 4 if smoothness is None else smoothness, "smoothness")
    g = as_generator(generator)
    std = float(uniform(g, 0.0, max_std))
    field = smooth_noise(shape, len(shape), smoothness, g)
    field = field - field.mean(dim=tuple(range(2, field.dim())), keepdim=True)
    return std * field / field.std().clamp_min(1e-6)


@dataclass(frozen=True)
class AffineParams:
    """Parameters of an affine transform about the image centre (see :func:`make_affine`).

    Attributes
    ----------
    rotation : tuple of float
        Angles in degrees: 1 in 2D (plane of axes 0-1), 3 in 3D (planes 0-1, 0-2, 1-2).
    scale : tuple of float
        Scale factor per axis (1 = none).
    shear : tuple of float
        Upper off-diagonal shear terms: 1 in 2D, 3 in 3D (0-1, 0-2, 1-2).
    translation : tuple of float
        Shift per axis, voxels.
    """

    rotation: tuple[float, ...]
    scale: tuple[float, ...]
    shear: tuple[float, ...]
    translation: tuple[float, ...]

    @property
    def ndim(self) -> int:
        return len(self.scale)


def rotation_planes(ndim: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(ndim) for j in range(i + 1, ndim)]


def make_affine(params: AffineParams, shape: Sequence[int]) -> torch.Tensor:
    """The homogeneous voxel matrix of ``params`` about the centre of a grid of ``shape``.

    ``m = M (f - c) + c + t`` with ``M = R @ diag(scale) @ H`` and ``c = (shape - 1) / 2``; the
    matrix maps fixed voxel indices ``f`` to moving voxel indices ``m`` (array order).

    Returns
    -------
    Tensor ``(ndim + 1, ndim + 1)``, float32.

    Examples
    --------
    >>> p = AffineParams(rotation=(0.0,), scale=(1.0, 1.0), shear=(0.0,), translation=(2.0, 0.0))
    >>> make_affine(p, (9, 9))[0, 2]
    tensor(2.)
    """
    shape = check_shape(shape)
    ndim = len(shape)
    planes = rotation_planes(ndim)
    sizes = {"rotation": len(planes), "scale": ndim, "shear": len(planes), "translation": ndim}
    for name, size in sizes.items():
        if len(getattr(params, name)) != size:
            raise ValueError(
                f"params.{name}: expected {size} values for a {ndim}D shape {shape}, got "
                f"{len(getattr(params, name))}."
            )
    radians = torch.tensor([math.radians(a) for a in params.rotation], dtype=torch.float64)
    rotation = rotation_matrix(radians, ndim)
    shear = torch.eye(ndim, dtype=torch.float64)
    for (i, j), s in zip(planes, params.shear):
        shear[i, j] = s
    linear = rotation @ torch.diag(torch.tensor(params.scale, dtype=torch.float64)) @ shear
    centre = (torch.tensor(shape, dtype=torch.float64) - 1) / 2
    matrix = torch.eye(ndim + 1, dtype=torch.float64)
    matrix[:ndim, :ndim] = linear
    shift = torch.tensor(params.translation, dtype=torch.float64)
    matrix[:ndim, ndim] = centre - linear @ centre + shift
    return matrix.to(torch.float32)


def sample_affine_params(
    ndim: int, generator: GeneratorLike, *, rotation: float = 10.0, scale: float = 0.1,
    shear: float = 0.05, translation: float = 2.0,
) -> AffineParams:
    """Draw :class:`AffineParams` uniformly within the given magnitudes.

    Angles ~ U(-rotation, rotation) degrees; scale factors ~ 1 + U(-scale, scale); shears ~
    U(-shear, shear); shifts ~ U(-translation, translation) voxels. Zero magnitudes give the
    identity.

    Examples
    --------
    >>> sample_affine_params(2, generator=0, rotation=0, scale=0, shear=0, translation=0).scale
    (1.0, 1.0)
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim: expected 2 or 3, got {ndim!r}.")
    rotation = non_negative(rotation, "rotation")
    scale = non_negative(scale, "scale")
    if scale >= 1:
        raise ValueError(f"scale: expected a relative change in [0, 1), got {scale}.")
    shear = non_negative(shear, "shear")
    translation = non_negative(translation, "translation")
    g = as_generator(generator)
    n_planes = len(rotation_planes(ndim))

    def draw(magnitude: float, size: int, offset: float = 0.0) -> tuple[float, ...]:
        return tuple(float(x) + offset for x in uniform(g, -magnitude, magnitude, size))

    return AffineParams(
        rotation=draw(rotation, n_planes), scale=draw(scale, ndim, 1.0),
        shear=draw(shear, n_planes), translation=draw(translation, ndim),
    )


def random_affine(
    shape: Sequence[int], generator: GeneratorLike, *, rotation: float = 10.0, scale: float = 0.1,
    shear: float = 0.05, translation: float = 2.0,
) -> torch.Tensor:
    """A random affine voxel matrix about the centre of ``shape``.

    :func:`sample_affine_params` followed by :func:`make_affine`.

    Returns
    -------
    Tensor ``(ndim + 1, ndim + 1)``, float32: fixed voxel index → moving voxel index.

    Examples
    --------
    >>> random_affine((16, 16), generator=0, rotation=0, scale=0, shear=0, translation=0)
    tensor([[1., 0., 0.],
            [0., 1., 0.],
            [0., 0., 1.]])
    """
    shape = check_shape(shape)
    params = sample_affine_params(len(shape), generator, rotation=rotation, scale=scale,
                                  shear=shear, translation=translation)
    return make_affine(params, shape)
