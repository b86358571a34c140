"""Brain-like pairs from nilearn's MNI152 template (1 or 2 mm) and its tissue maps."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from deepreg_core.preprocess import resize_image
from deepreg_core.spatial import warp, warp_affine
from deepreg_core.synth._common import (
    GeneratorLike,
    as_generator,
    check_shape,
    non_negative,
    uniform,
)
from deepreg_core.synth.pairs import SyntheticPair, ground_truth
from deepreg_core.synth.transforms import random_affine, random_velocity

# ----------------------------------------------------------------------------- MNI152 brains


MNI_RESOLUTIONS = (1, 2)  # mm; nilearn ships the template and tissue maps at both


def check_resolution(resolution: object) -> int:
    if isinstance(resolution, bool) or resolution not in MNI_RESOLUTIONS:
        raise ValueError(f"resolution: expected 1 or 2 (mm), got {resolution!r}.")
    return int(resolution)  # type: ignore[call-overload]


@functools.lru_cache(maxsize=2)
def mni_stack(resolution: int = 2) -> torch.Tensor:
    """MNI152 T1, GM and WM maps stacked, float32 (read once per resolution).

    ``(3, 99, 117, 95)`` at ``resolution=2`` mm, ``(3, 197, 233, 189)`` at ``resolution=1`` mm.
    """
    resolution = check_resolution(resolution)
    try:
        from nilearn import datasets
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "mni_pair needs nilearn (it ships the MNI152 template and tissue maps offline). "
            "Install it with `pip install nilearn` or `pip install deepreg-core[brain]`."
        ) from error
    volumes = [
        np.asarray(loader(resolution=resolution).get_fdata(), dtype=np.float32)
        for loader in (datasets.load_mni152_template, datasets.load_mni152_gm_template,
                       datasets.load_mni152_wm_template)
    ]
    return torch.from_numpy(np.stack(volumes))


def to_images(stack: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize ``(3, *spatial)`` T1/GM/WM to ``shape``: T1 in [0, 1] and labels 0 bg, 1 GM, 2 WM."""
    t1, gm, wm = resize_image(stack[None], shape)[0]  # anti-aliased, as inference resizes
    t1 = (t1 / torch.quantile(t1.flatten(), 0.995)).clamp(0.0, 1.0)
    background = (1.0 - gm - wm).clamp(0.0, 1.0)
    labels = torch.stack([background, gm, wm]).argmax(dim=0)
    return t1[None, None].contiguous(), labels[None, None].contiguous()


@functools.lru_cache(maxsize=4)
def mni_volumes(
    shape: tuple[int, ...], resolution: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNI152 T1 in [0, 1] and tissue labels (0 background, 1 GM, 2 WM) resized to ``shape``.

    Read from nilearn's ``resolution`` mm template (1 or 2); both share the same origin.
    """
    stack = mni_stack(resolution)
    if len(shape) == 2:
        # an axial slice ~10 mm above the AC (voxel k=41 at 2 mm, 82 at 1 mm), anterior at the top
        stack = stack[:, :, :, 82 // resolution].transpose(1, 2).flip(1)
    return to_images(stack.contiguous(), shape)


def random_mni_slice(
    shape: Sequence[int], generator: GeneratorLike, *, resolution: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random 2D MNI152 slice: any of the three orientations, position, flips and 90° turns.

    The slice index is drawn from the central 60 % of the chosen axis (where there is brain);
    each in-plane axis is flipped with probability 1/2 and the plane is transposed with
    probability 1/2, so a 2D model sees axial, coronal and sagittal anatomy in every layout.
    ``resolution`` (1 or 2 mm) picks the template the slice is cut from.

    Returns
    -------
    (t1, labels)
        ``(1, 1, *shape)`` T1 in [0, 1] and int64 labels (0 background, 1 GM, 2 WM).
    """
    shape = check_shape(shape)
    if len(shape) != 2:
        raise ValueError(f"shape: expected 2 sizes for a slice, got {shape}.")
    g = as_generator(generator)
    stack = mni_stack(check_resolution(resolution))
    axis = int(torch.randint(0, 3, (1,), generator=g))
    size = stack.shape[1 + axis]
    index = int(size * float(uniform(g, 0.2, 0.8)))
    plane = stack.select(1 + axis, index)
    flips = torch.rand(3, generator=g) < 0.5
    for dim in (1, 2):
        if flips[dim - 1]:
            plane = plane.flip(dim)
    if flips[2]:
        plane = plane.transpose(1, 2)
    return to_images(plane.contiguous(), shape)


def random_lut(image: torch.Tensor, generator: torch.Generator, knots: int = 6) -> torch.Tensor:
    """Remap intensities in [0, 1] through a random piecewise-linear curve (a new contrast)."""
    values = torch.rand(knots, generator=generator)
    values[0] = 0.0  # keep the background dark
    position = image.clamp(0, 1) * (knots - 1)
    low = position.floor().long().clamp(max=knots - 2)
    weight = position - low
    return (1 - weight) * values[low] + weight * values[low + 1]


def mni_pair(
    shape: Sequence[int], generator: GeneratorLike, *, deformable: bool = True,
    affine: bool = False, same_contrast: bool = True, velocity_std: float = 2.0,
    smoothness: float | None = None, rotation: float = 10.0, scale: float = 0.1,
    shear: float = 0.05, translation: float = 2.0, max_noise: float = 0.02,
    integration_steps: int = 7, orientation: str = "axial", resolution: int = 2,
    pose: bool = False,
) -> SyntheticPair:
    """A brain-like pair from nilearn's MNI152 template with a random realistic deformation.

    The template T1 (2 mm, or 1 mm with ``resolution=1``) and its grey/white-matter maps are
    resized to ``shape`` (a 2D shape takes
    an axial slice); labels are the argmax of (background, GM, WM). The fixed image is the template;
    the moving image is the template pulled through ``phi⁻¹`` as in :func:`synthetic_pair`,
    with a random intensity curve when ``same_contrast=False``; each image gets its own noise.

    Parameters
    ----------
    shape : sequence of int
        2D (axial slice) or 3D shape.
    generator : torch.Generator or int
    deformable, affine, velocity_std, smoothness, rotation, scale, shear, translation
        As in :func:`synthetic_pair` (smoothness defaults to ``min(shape) / 4`` voxels).
    same_contrast : bool
        Keep the T1 contrast for the moving image.
    max_noise : float
        Largest noise standard deviation.
    integration_steps : int
    orientation : {"axial", "random"}
        2D only: the fixed axial slice, or a random slice of :func:`random_mni_slice` (any
        orientation, position, flips), drawn from ``generator`` first.
    resolution : {2, 1}
        Which of nilearn's templates to read, in mm: 2 (``99 × 117 × 95``, default) or 1
        (``197 × 233 × 189``). ``shape`` equal to the template's shape keeps its voxels as they
        are; the magnitudes above are in voxels of ``shape`` (double them at 1 mm for the same
        physical size).
    pose : bool
        Also give the fixed image a random pose (an affine of the same magnitudes: the head as
        it lay in the scanner) and, with ``same_contrast=False``, a random contrast half of the
        time, so that a network cannot learn the template's own position and intensities.

    Returns
    -------
    SyntheticPair
        Labels: 0 background, 1 grey matter, 2 white matter.

    Raises
    ------
    ImportError
        When nilearn is not installed.

    Examples
    --------
    >>> pair = mni_pair((64, 64), generator=0)  # doctest: +SKIP
    """
    shape = check_shape(shape)
    max_noise = non_negative(max_noise, "max_noise")
    resolution = check_resolution(resolution)
    g = as_generator(generator)
    if orientation not in ("axial", "random"):
        raise ValueError(f"orientation: expected 'axial' or 'random', got {orientation!r}.")
    if orientation == "random" and len(shape) == 2:
        t1, labels = random_mni_slice(shape, g, resolution=resolution)
    else:
        t1, labels = mni_volumes(shape, resolution)
    if pose:
        posed = random_affine(shape, g, rotation=rotation, scale=scale, shear=shear,
                              translation=translation)
        t1 = warp_affine(t1, posed, padding="zeros")
        labels = warp_affine(labels, posed, mode="nearest", padding="zeros")
        if not same_contrast and float(uniform(g, 0.0, 1.0)) < 0.5:
            t1 = random_lut(t1, g)
    velocity = random_velocity(shape, g, velocity_std, smoothness) if deformable else None
    matrix = (random_affine(shape, g, rotation=rotation, scale=scale, shear=shear,
                            translation=translation) if affine else None)
    forward, inverse = ground_truth(shape, velocity, matrix, integration_steps)
    moving = warp(t1, inverse, padding="zeros")
    if not same_contrast:
        moving = random_lut(moving, g)
    noise_std = float(uniform(g, 0.0, max_noise))
    fixed = (t1 + noise_std * torch.randn(t1.shape, generator=g)).clamp(0, 1)
    moving = (moving + noise_std * torch.randn(t1.shape, generator=g)).clamp(0, 1)
    moving_labels = warp(labels, inverse, mode="nearest", padding="zeros")
    return SyntheticPair(fixed, moving, labels.clone(), moving_labels, forward, matrix, velocity)
