"""Synthetic pairs with their ground-truth displacement: :class:`SyntheticPair`, :func:`synthetic_pair`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from deepreg_core.preprocess import resize_image, resize_labels
from deepreg_core.spatial import (
    affine_to_displacement,
    compose,
    identity_grid,
    integrate_velocity,
    resize_displacement,
    warp,
)
from deepreg_core.synth._common import GeneratorLike, as_generator, check_shape, uniform
from deepreg_core.synth.contrast import (
    Contrast,
    apply_contrast,
    finish_image,
    random_label_map,
    sample_contrast,
    tissue_image,
)
from deepreg_core.synth.transforms import random_affine, random_velocity

# ----------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class SyntheticPair:
    """A fixed/moving pair with its ground-truth transform.

    Attributes
    ----------
    fixed, moving : Tensor ``(1, 1, *spatial)``
        Images in ``[0, 1]``.
    fixed_labels, moving_labels : Tensor ``(1, 1, *spatial)``, int64
    displacement : Tensor ``(1, ndim, *spatial)``
        Ground truth in voxels of the fixed grid: ``warp(moving, displacement) ≈ fixed``.
    affine : Tensor ``(ndim + 1, ndim + 1)`` or None
        The affine part (fixed → moving voxel indices), when one was drawn.
    velocity : Tensor ``(1, ndim, *spatial)`` or None
        The velocity whose exponential is the deformable part, when one was drawn.
    """

    fixed: torch.Tensor
    moving: torch.Tensor
    fixed_labels: torch.Tensor
    moving_labels: torch.Tensor
    displacement: torch.Tensor
    affine: torch.Tensor | None = None
    velocity: torch.Tensor | None = None


def exp_velocity(velocity: torch.Tensor, steps: int) -> torch.Tensor:
    """``exp(v)``; large smooth fields are integrated on a half-size grid and up-sampled."""
    shape = tuple(velocity.shape[2:])
    if math.prod(shape) <= 64**3 or min(shape) < 32:
        return integrate_velocity(velocity, steps=steps)
    half = tuple(n // 2 for n in shape)
    coarse = resize_displacement(velocity, half)
    return resize_displacement(integrate_velocity(coarse, steps=steps), shape)


def ground_truth(
    shape: tuple[int, ...], velocity: torch.Tensor | None, matrix: torch.Tensor | None,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward field ``phi = A ∘ exp(v)`` and inverse field ``exp(-v) ∘ inv(A)``."""
    ndim = len(shape)
    zero = torch.zeros(1, ndim, *shape)
    forward = zero if velocity is None else exp_velocity(velocity, steps)
    inverse = zero if velocity is None else exp_velocity(-velocity, steps)
    if matrix is not None:
        points = identity_grid(shape) + forward  # exp(v)(x), then A applied exactly
        moved = torch.einsum("ij,bj...->bi...", matrix[:ndim, :ndim], points)
        moved = moved + matrix[:ndim, ndim].view(1, ndim, *[1] * ndim)
        forward = moved - identity_grid(shape)
        inverse_affine = affine_to_displacement(torch.linalg.inv(matrix.double()).float(), shape)
        inverse = compose(inverse, inverse_affine)
    return forward, inverse


def synthetic_pair(
    shape: Sequence[int], generator: GeneratorLike, *, deformable: bool = True,
    affine: bool = False, same_contrast: bool = False, n_labels: int = 8,
    label_scale: float | None = None, velocity_std: float = 2.0, smoothness: float | None = None,
    rotation: float = 10.0, scale: float = 0.1, shear: float = 0.05, translation: float = 2.0,
    max_blur: float = 1.0, max_bias: float = 0.3, max_noise: float = 0.05,
    integration_steps: int = 7,
) -> SyntheticPair:
    """A SynthMorph-style pair with a known transform.

    A source label map ``S`` is drawn (:func:`random_label_map`); ``fixed = render(S)``. The
    ground truth ``phi(x) = x + u(x)`` is ``A ∘ exp(v)`` (either part optional), and the moving
    image is the source pulled through ``phi⁻¹ = exp(-v) ∘ A⁻¹``, so that
    ``warp(moving, u) ≈ fixed`` and ``warp(moving_labels, u, mode="nearest") ≈ fixed_labels``.
    Each image gets its own bias field and noise; with ``same_contrast=False`` the moving image
    also gets its own label intensities and blur (a different "modality").

    Parameters
    ----------
    shape : sequence of int
        Spatial shape, 2 or 3 sizes.
    generator : torch.Generator or int
    deformable, affine : bool
        Which parts the ground truth has (both False gives the identity).
    same_contrast : bool
        Render both images with the same label intensities and blur.
    n_labels, label_scale
        See :func:`random_label_map`.
    velocity_std, smoothness
        See :func:`random_velocity` (``max_std``), voxels.
    rotation, scale, shear, translation
        See :func:`sample_affine_params`.
    max_blur, max_bias, max_noise
        See :func:`sample_contrast`.
    integration_steps : int
        Scaling-and-squaring steps for ``exp(±v)``.

    Returns
    -------
    SyntheticPair

    Examples
    --------
    >>> pair = synthetic_pair((32, 32), generator=0)
    >>> pair.fixed.shape, pair.displacement.shape
    (torch.Size([1, 1, 32, 32]), torch.Size([1, 2, 32, 32]))
    """
    shape = check_shape(shape)
    g = as_generator(generator)
    source = random_label_map(shape, n_labels, g, scale=label_scale)
    options = {"max_blur": max_blur, "max_bias": max_bias, "max_noise": max_noise}
    fixed_contrast = sample_contrast(shape, n_labels, g, **options)
    moving_contrast = sample_contrast(shape, n_labels, g, **options)
    if same_contrast:
        moving_contrast = Contrast(fixed_contrast.intensities, fixed_contrast.blur_sigma,
                                   moving_contrast.bias, moving_contrast.noise)
    velocity = random_velocity(shape, g, velocity_std, smoothness) if deformable else None
    matrix = (random_affine(shape, g, rotation=rotation, scale=scale, shear=shear,
                            translation=translation) if affine else None)
    forward, inverse = ground_truth(shape, velocity, matrix, integration_steps)

    fixed = apply_contrast(source, fixed_contrast)
    moving_tissue = warp(tissue_image(source, moving_contrast), inverse, padding="border")
    moving = finish_image(moving_tissue, moving_contrast)
    moving_labels = warp(source, inverse, mode="nearest", padding="border")
    return SyntheticPair(fixed, moving, source, moving_labels, forward, matrix, velocity)


def _random_box(pair: SyntheticPair, generator: GeneratorLike,
                min_fraction: float) -> list[slice] | None:
    """Per axis a random extent of ``min_fraction .. 1`` of its voxels at a random offset
    (None for ``min_fraction=1``: the whole grid)."""
    if not 0.0 < float(min_fraction) <= 1.0:
        raise ValueError(f"min_fraction: expected a number in (0, 1], got {min_fraction!r}.")
    if min_fraction == 1.0:
        return None
    g = as_generator(generator)
    box = []
    for n in pair.fixed.shape[2:]:
        size = max(2, int(round(n * float(uniform(g, float(min_fraction), 1.0)))))
        start = int(torch.randint(0, n - size + 1, (1,), generator=g))
        box.append(slice(start, start + size))
    return box


def random_crop(pair: SyntheticPair, generator: GeneratorLike, min_fraction: float) -> SyntheticPair:
    """The same random box cut from every part of ``pair`` and resized back to its shape.

    Each axis keeps a random extent of ``min_fraction .. 1`` of its voxels at a random offset,
    so a network sees partial fields of view and, after the resize, other voxel aspect ratios,
    as images of other scanners reach it. The ground truth stays exact: the box is cut from the
    fixed grid, the field is resampled like the images and rescaled into voxels of the new grid
    (:func:`~deepreg_core.spatial.resize_displacement`). The affine and velocity parts are
    dropped (they are in the old grid's voxels). ``min_fraction=1`` returns ``pair`` unchanged.

    Examples
    --------
    >>> pair = synthetic_pair((32, 32), generator=0)
    >>> random_crop(pair, 1, 0.5).fixed.shape
    torch.Size([1, 1, 32, 32])
    """
    box = _random_box(pair, generator, min_fraction)
    if box is None:
        return pair
    shape = tuple(pair.fixed.shape[2:])
    cut = (slice(None), slice(None), *box)

    def image(x: torch.Tensor) -> torch.Tensor:
        return resize_image(x[cut], shape)  # up-sampling: no blur, linear, align_corners

    def labels(x: torch.Tensor) -> torch.Tensor:
        return resize_labels(x[cut], shape)

    return SyntheticPair(image(pair.fixed), image(pair.moving), labels(pair.fixed_labels),
                         labels(pair.moving_labels),
                         resize_displacement(pair.displacement[cut], shape))


def random_field_of_view(pair: SyntheticPair, generator: GeneratorLike,
                         min_fraction: float) -> SyntheticPair:
    """Blank both images (and labels) outside one random box: a partial field of view.

    Each axis keeps a random ``min_fraction .. 1`` of its extent at a random offset, so a scan
    that covers a slab of the head (a few slices, a cropped acquisition) is in the training
    distribution. The box lies on the fixed grid, where inference resamples the moving image
    too, so the moving image is blanked by the same box; the ground truth is unchanged.

    Examples
    --------
    >>> pair = synthetic_pair((32, 32), generator=0)
    >>> cut = random_field_of_view(pair, 1, 0.3)
    >>> bool((cut.fixed == 0).any()), torch.equal(cut.displacement, pair.displacement)
    (True, True)
    """
    box = _random_box(pair, generator, min_fraction)
    if box is None:
        return pair
    mask = torch.zeros((1, 1, *pair.fixed.shape[2:]), dtype=torch.bool)
    mask[(slice(None), slice(None), *box)] = True
    return SyntheticPair(pair.fixed * mask, pair.moving * mask, pair.fixed_labels * mask,
                         pair.moving_labels * mask, pair.displacement, pair.affine, pair.velocity)
