"""Synthetic image pairs with known ground truth.

Every random function here samples its parameters from a ``torch.Generator`` (or an integer seed)
and hands them to a deterministic operation, and it returns the ground truth it used, so any pair
can be replayed and tested (TorchIO's ``RandomAffine`` → ``Affine`` pattern).

- :func:`random_label_map`: SynthMorph-style label maps (smooth random noise per label, argmax).
- :func:`render_labels`: an image of random contrast from a label map (per-label intensities,
  blur, bias field, noise, values in ``[0, 1]``). Different draws give different contrasts, which
  is what makes networks trained on them contrast-agnostic (multimodal).
- :func:`random_velocity`: a smooth stationary velocity field; ``exp(v)`` is diffeomorphic.
- :func:`random_affine` = :func:`sample_affine_params` + :func:`make_affine`.
- :func:`synthetic_pair` and :func:`mni_pair` (brain-like, needs nilearn): a
  :class:`SyntheticPair` whose ``displacement`` satisfies ``warp(moving, displacement) ≈ fixed``.

Conventions are those of ``docs/conventions.md``: tensors ``(B, C, *spatial)`` in array order,
displacements in voxels of the fixed grid, affines map fixed voxel indices to moving ones.

References
----------
Hoffmann et al., "SynthMorph: learning contrast-invariant registration without acquired images",
IEEE TMI 2022.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from deepreg_core._diff import gaussian_kernel, separable_filter
from deepreg_core.preprocess import resize_image
from deepreg_core.spatial import (
    affine_to_displacement,
    compose,
    identity_grid,
    integrate_velocity,
    resize_displacement,
    warp,
)

GeneratorLike = torch.Generator | int


# ----------------------------------------------------------------------------- checks and helpers


def _generator(generator: object) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(int(generator))
    raise TypeError(
        f"generator: expected a torch.Generator or an integer seed, got {type(generator).__name__}."
    )


def _shape(shape: object) -> tuple[int, ...]:
    try:
        values = tuple(int(n) for n in shape)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"shape: expected a sequence of 2 or 3 integers, got {shape!r}.") from None
    if len(values) not in (2, 3) or any(n < 2 for n in values):
        raise ValueError(f"shape: expected 2 or 3 sizes, each >= 2, got {values}.")
    return values


def _non_negative(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite value >= 0, got {value}.")
    return value


def _positive(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite value > 0, got {value}.")
    return value


def _uniform(generator: torch.Generator, low: float, high: float, size: int = 1) -> torch.Tensor:
    return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(B, C, *spatial)`` along every spatial axis (replicated borders)."""
    if sigma <= 0:
        return x
    return separable_filter(x, gaussian_kernel(sigma), padding_mode="replicate")


def _smooth_noise(
    shape: tuple[int, ...], channels: int, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """Smooth Gaussian noise ``(1, channels, *shape)`` with features of about ``scale`` voxels.

    White noise on a control grid of spacing ``scale``, linearly up-sampled and blurred with
    ``sigma = scale / 2`` so the result is smooth (not merely piecewise linear).
    """
    coarse = [max(2, math.ceil((n - 1) / scale) + 1) for n in shape]
    noise = torch.randn(1, channels, *coarse, generator=generator)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    # Blur on an intermediate grid (at least 3 samples per blur sigma), then up-sample: the
    # result is smooth on the scale of `scale`, so this matches a full-resolution blur closely
    # at a fraction of the cost for large 3D shapes.
    factor = max(1.0, scale / 6.0)
    middle = [max(2, math.ceil((n - 1) / factor) + 1) for n in shape]
    field = F.interpolate(noise, size=middle, mode=mode, align_corners=True)
    field = _blur(field, scale / 2 / factor)
    if tuple(middle) != tuple(shape):
        field = F.interpolate(field, size=shape, mode=mode, align_corners=True)
    return field


# ----------------------------------------------------------------------------- labels and contrast


def random_label_map(
    shape: Sequence[int], n_labels: int, generator: GeneratorLike, *, scale: float | None = None
) -> torch.Tensor:
    """A random label map: smooth noise per label, then the label of the largest at each voxel.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape (2 or 3 sizes, array order).
    n_labels : int
        Number of labels (>= 1); values are ``0 .. n_labels - 1``.
    generator : torch.Generator or int
        Source of randomness (or a seed).
    scale : float, optional
        Typical size of the blobs in voxels (default ``min(shape) / 4``).

    Returns
    -------
    Tensor ``(1, 1, *shape)``, int64.

    Examples
    --------
    >>> labels = random_label_map((32, 32), 4, generator=0)
    >>> labels.shape, int(labels.max()) < 4
    (torch.Size([1, 1, 32, 32]), True)
    """
    shape = _shape(shape)
    if isinstance(n_labels, bool) or not isinstance(n_labels, int) or n_labels < 1:
        raise ValueError(f"n_labels: expected an integer >= 1, got {n_labels!r}.")
    scale = _positive(min(shape) / 4 if scale is None else scale, "scale")
    noise = _smooth_noise(shape, n_labels, scale, _generator(generator))
    return noise.argmax(dim=1, keepdim=True)


@dataclass(frozen=True)
class Contrast:
    """Parameters of one rendering of a label map (see :func:`apply_contrast`).

    Attributes
    ----------
    intensities : Tensor ``(n_labels,)``
        Mean intensity of each label, in ``[0, 1]``.
    blur_sigma : float
        Gaussian blur of the piecewise-constant image, in voxels.
    bias : Tensor ``(1, 1, *shape)``
        Multiplicative smooth bias field (1 = none).
    noise : Tensor ``(1, 1, *shape)``
        Additive Gaussian noise.
    """

    intensities: torch.Tensor
    blur_sigma: float
    bias: torch.Tensor
    noise: torch.Tensor


def sample_contrast(
    shape: Sequence[int], n_labels: int, generator: GeneratorLike, *, max_blur: float = 1.0,
    max_bias: float = 0.3, max_noise: float = 0.05,
) -> Contrast:
    """Draw a :class:`Contrast`: intensities ~ U(0, 1); blur, bias and noise up to their maxima.

    ``max_blur`` is in voxels; ``max_bias`` is the largest standard deviation of the log bias
    field; ``max_noise`` the largest noise standard deviation (intensity units).

    Examples
    --------
    >>> c = sample_contrast((16, 16), 3, generator=1)
    >>> c.intensities.shape, c.bias.shape
    (torch.Size([3]), torch.Size([1, 1, 16, 16]))
    """
    shape = _shape(shape)
    if isinstance(n_labels, bool) or not isinstance(n_labels, int) or n_labels < 1:
        raise ValueError(f"n_labels: expected an integer >= 1, got {n_labels!r}.")
    max_blur = _non_negative(max_blur, "max_blur")
    max_bias = _non_negative(max_bias, "max_bias")
    max_noise = _non_negative(max_noise, "max_noise")
    g = _generator(generator)
    intensities = torch.rand(n_labels, generator=g)
    blur_sigma = float(_uniform(g, 0.0, max_blur))
    bias_std = float(_uniform(g, 0.0, max_bias))
    noise_std = float(_uniform(g, 0.0, max_noise))
    log_bias = _smooth_noise(shape, 1, max(shape) / 2, g)
    log_bias = log_bias / log_bias.std().clamp_min(1e-6)
    bias = torch.exp(bias_std * log_bias)
    noise = noise_std * torch.randn(1, 1, *shape, generator=g)
    return Contrast(intensities, blur_sigma, bias, noise)


def tissue_image(labels: torch.Tensor, contrast: Contrast) -> torch.Tensor:
    """The clean part of a rendering: ``intensities[labels]`` blurred, ``(B, 1, *spatial)``."""
    _check_labels(labels)
    n = contrast.intensities.numel()
    if int(labels.max()) >= n or int(labels.min()) < 0:
        raise ValueError(
            f"labels: expected values in 0..{n - 1} (one intensity per label), got "
            f"{int(labels.min())}..{int(labels.max())}."
        )
    image = contrast.intensities.to(torch.float32)[labels]
    return _blur(image, contrast.blur_sigma)


def finish_image(tissue: torch.Tensor, contrast: Contrast) -> torch.Tensor:
    """Apply the bias field and noise of ``contrast`` to ``tissue`` and clip to ``[0, 1]``."""
    return (tissue * contrast.bias + contrast.noise).clamp(0.0, 1.0)


def apply_contrast(labels: torch.Tensor, contrast: Contrast) -> torch.Tensor:
    """Render ``labels (1, 1, *spatial)`` deterministically with ``contrast``; values in [0, 1]."""
    return finish_image(tissue_image(labels, contrast), contrast)


def _check_labels(labels: object) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels: expected a torch.Tensor, got {type(labels).__name__}.")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels: expected an integer tensor, got dtype {labels.dtype}.")
    if labels.dim() not in (4, 5) or labels.shape[1] != 1:
        raise ValueError(
            f"labels: expected shape (B, 1, H, W) or (B, 1, D, H, W), got {tuple(labels.shape)}."
        )
    return labels


def render_labels(
    labels: torch.Tensor, generator: GeneratorLike, *, max_blur: float = 1.0,
    max_bias: float = 0.3, max_noise: float = 0.05,
) -> torch.Tensor:
    """An image of random contrast from a label map, values in ``[0, 1]``.

    Samples a :class:`Contrast` (:func:`sample_contrast`) and applies it (:func:`apply_contrast`).

    Parameters
    ----------
    labels : Tensor ``(1, 1, *spatial)``, integer
        Label map with values ``0 .. n - 1``.
    generator : torch.Generator or int
    max_blur, max_bias, max_noise : float
        See :func:`sample_contrast`.

    Returns
    -------
    Tensor ``(1, 1, *spatial)``, float32 in ``[0, 1]``.

    Examples
    --------
    >>> image = render_labels(random_label_map((32, 32), 4, generator=0), generator=1)
    >>> float(image.min()) >= 0 and float(image.max()) <= 1
    True
    """
    labels = _check_labels(labels)
    contrast = sample_contrast(tuple(labels.shape[2:]), int(labels.max()) + 1, generator,
                               max_blur=max_blur, max_bias=max_bias, max_noise=max_noise)
    return apply_contrast(labels, contrast)


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
    shape = _shape(shape)
    max_std = _non_negative(max_std, "max_std")
    smoothness = _positive(min(shape) / 4 if smoothness is None else smoothness, "smoothness")
    g = _generator(generator)
    std = float(_uniform(g, 0.0, max_std))
    field = _smooth_noise(shape, len(shape), smoothness, g)
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


def _planes(ndim: int) -> list[tuple[int, int]]:
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
    shape = _shape(shape)
    ndim = len(shape)
    planes = _planes(ndim)
    sizes = {"rotation": len(planes), "scale": ndim, "shear": len(planes), "translation": ndim}
    for name, size in sizes.items():
        if len(getattr(params, name)) != size:
            raise ValueError(
                f"params.{name}: expected {size} values for a {ndim}D shape {shape}, got "
                f"{len(getattr(params, name))}."
            )
    rotation = torch.eye(ndim, dtype=torch.float64)
    shear = torch.eye(ndim, dtype=torch.float64)
    for (i, j), angle, s in zip(planes, params.rotation, params.shear):
        c, si = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        plane = torch.eye(ndim, dtype=torch.float64)
        plane[i, i], plane[i, j], plane[j, i], plane[j, j] = c, -si, si, c
        rotation = rotation @ plane
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
    rotation = _non_negative(rotation, "rotation")
    scale = _non_negative(scale, "scale")
    if scale >= 1:
        raise ValueError(f"scale: expected a relative change in [0, 1), got {scale}.")
    shear = _non_negative(shear, "shear")
    translation = _non_negative(translation, "translation")
    g = _generator(generator)
    n_planes = len(_planes(ndim))

    def draw(magnitude: float, size: int, offset: float = 0.0) -> tuple[float, ...]:
        return tuple(float(x) + offset for x in _uniform(g, -magnitude, magnitude, size))

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
    shape = _shape(shape)
    params = sample_affine_params(len(shape), generator, rotation=rotation, scale=scale,
                                  shear=shear, translation=translation)
    return make_affine(params, shape)


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


def _exp(velocity: torch.Tensor, steps: int) -> torch.Tensor:
    """``exp(v)``; large smooth fields are integrated on a half-size grid and up-sampled."""
    shape = tuple(velocity.shape[2:])
    if math.prod(shape) <= 64**3 or min(shape) < 32:
        return integrate_velocity(velocity, steps=steps)
    half = tuple(n // 2 for n in shape)
    coarse = resize_displacement(velocity, half)
    return resize_displacement(integrate_velocity(coarse, steps=steps), shape)


def _ground_truth(
    shape: tuple[int, ...], velocity: torch.Tensor | None, matrix: torch.Tensor | None,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward field ``phi = A ∘ exp(v)`` and inverse field ``exp(-v) ∘ inv(A)``."""
    ndim = len(shape)
    zero = torch.zeros(1, ndim, *shape)
    forward = zero if velocity is None else _exp(velocity, steps)
    inverse = zero if velocity is None else _exp(-velocity, steps)
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
    shape = _shape(shape)
    g = _generator(generator)
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
    forward, inverse = _ground_truth(shape, velocity, matrix, integration_steps)

    fixed = apply_contrast(source, fixed_contrast)
    moving_tissue = warp(tissue_image(source, moving_contrast), inverse, padding="border")
    moving = finish_image(moving_tissue, moving_contrast)
    moving_labels = warp(source, inverse, mode="nearest", padding="border")
    return SyntheticPair(fixed, moving, source, moving_labels, forward, matrix, velocity)


# ----------------------------------------------------------------------------- MNI152 brains


MNI_RESOLUTIONS = (1, 2)  # mm; nilearn ships the template and tissue maps at both


def _check_resolution(resolution: object) -> int:
    if isinstance(resolution, bool) or resolution not in MNI_RESOLUTIONS:
        raise ValueError(f"resolution: expected 1 or 2 (mm), got {resolution!r}.")
    return int(resolution)  # type: ignore[call-overload]


@functools.lru_cache(maxsize=2)
def _mni_stack(resolution: int = 2) -> torch.Tensor:
    """MNI152 T1, GM and WM maps stacked, float32 (read once per resolution).

    ``(3, 99, 117, 95)`` at ``resolution=2`` mm, ``(3, 197, 233, 189)`` at ``resolution=1`` mm.
    """
    resolution = _check_resolution(resolution)
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


def _to_images(stack: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize ``(3, *spatial)`` T1/GM/WM to ``shape``: T1 in [0, 1] and labels 0 bg, 1 GM, 2 WM."""
    t1, gm, wm = resize_image(stack[None], shape)[0]  # anti-aliased, as inference resizes
    t1 = (t1 / torch.quantile(t1.flatten(), 0.995)).clamp(0.0, 1.0)
    background = (1.0 - gm - wm).clamp(0.0, 1.0)
    labels = torch.stack([background, gm, wm]).argmax(dim=0)
    return t1[None, None].contiguous(), labels[None, None].contiguous()


@functools.lru_cache(maxsize=4)
def _mni_volumes(
    shape: tuple[int, ...], resolution: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNI152 T1 in [0, 1] and tissue labels (0 background, 1 GM, 2 WM) resized to ``shape``.

    Read from nilearn's ``resolution`` mm template (1 or 2); both share the same origin.
    """
    stack = _mni_stack(resolution)
    if len(shape) == 2:
        # an axial slice ~10 mm above the AC (voxel k=41 at 2 mm, 82 at 1 mm), anterior at the top
        stack = stack[:, :, :, 82 // resolution].transpose(1, 2).flip(1)
    return _to_images(stack.contiguous(), shape)


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
    shape = _shape(shape)
    if len(shape) != 2:
        raise ValueError(f"shape: expected 2 sizes for a slice, got {shape}.")
    g = _generator(generator)
    stack = _mni_stack(_check_resolution(resolution))
    axis = int(torch.randint(0, 3, (1,), generator=g))
    size = stack.shape[1 + axis]
    index = int(size * float(_uniform(g, 0.2, 0.8)))
    plane = stack.select(1 + axis, index)
    flips = torch.rand(3, generator=g) < 0.5
    for dim in (1, 2):
        if flips[dim - 1]:
            plane = plane.flip(dim)
    if flips[2]:
        plane = plane.transpose(1, 2)
    return _to_images(plane.contiguous(), shape)


def _random_lut(image: torch.Tensor, generator: torch.Generator, knots: int = 6) -> torch.Tensor:
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
    shape = _shape(shape)
    max_noise = _non_negative(max_noise, "max_noise")
    resolution = _check_resolution(resolution)
    g = _generator(generator)
    if orientation not in ("axial", "random"):
        raise ValueError(f"orientation: expected 'axial' or 'random', got {orientation!r}.")
    if orientation == "random" and len(shape) == 2:
        t1, labels = random_mni_slice(shape, g, resolution=resolution)
    else:
        t1, labels = _mni_volumes(shape, resolution)
    velocity = random_velocity(shape, g, velocity_std, smoothness) if deformable else None
    matrix = (random_affine(shape, g, rotation=rotation, scale=scale, shear=shear,
                            translation=translation) if affine else None)
    forward, inverse = _ground_truth(shape, velocity, matrix, integration_steps)
    moving = warp(t1, inverse, padding="zeros")
    if not same_contrast:
        moving = _random_lut(moving, g)
    noise_std = float(_uniform(g, 0.0, max_noise))
    fixed = (t1 + noise_std * torch.randn(t1.shape, generator=g)).clamp(0, 1)
    moving = (moving + noise_std * torch.randn(t1.shape, generator=g)).clamp(0, 1)
    moving_labels = warp(labels, inverse, mode="nearest", padding="zeros")
    return SyntheticPair(fixed, moving, labels.clone(), moving_labels, forward, matrix, velocity)
