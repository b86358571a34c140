"""SynthMorph-style label maps and random contrasts (what makes trained networks contrast-agnostic)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from deepreg_core.synth._common import (
    GeneratorLike,
    as_generator,
    blur,
    check_shape,
    non_negative,
    positive,
    smooth_noise,
    uniform,
)

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
    shape = check_shape(shape)
    if isinstance(n_labels, bool) or not isinstance(n_labels, int) or n_labels < 1:
        raise ValueError(f"n_labels: expected an integer >= 1, got {n_labels!r}.")
    scale = positive(min(shape) / 4 if scale is None else scale, "scale")
    noise = smooth_noise(shape, n_labels, scale, as_generator(generator))
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
    shape = check_shape(shape)
    if isinstance(n_labels, bool) or not isinstance(n_labels, int) or n_labels < 1:
        raise ValueError(f"n_labels: expected an integer >= 1, got {n_labels!r}.")
    max_blur = non_negative(max_blur, "max_blur")
    max_bias = non_negative(max_bias, "max_bias")
    max_noise = non_negative(max_noise, "max_noise")
    g = as_generator(generator)
    intensities = torch.rand(n_labels, generator=g)
    blur_sigma = float(uniform(g, 0.0, max_blur))
    bias_std = float(uniform(g, 0.0, max_bias))
    noise_std = float(uniform(g, 0.0, max_noise))
    log_bias = smooth_noise(shape, 1, max(shape) / 2, g)
    log_bias = log_bias / log_bias.std().clamp_min(1e-6)
    bias = torch.exp(bias_std * log_bias)
    noise = noise_std * torch.randn(1, 1, *shape, generator=g)
    return Contrast(intensities, blur_sigma, bias, noise)


def tissue_image(labels: torch.Tensor, contrast: Contrast) -> torch.Tensor:
    """The clean part of a rendering: ``intensities[labels]`` blurred, ``(B, 1, *spatial)``."""
    check_labels(labels)
    n = contrast.intensities.numel()
    if int(labels.max()) >= n or int(labels.min()) < 0:
        raise ValueError(
            f"labels: expected values in 0..{n - 1} (one intensity per label), got "
            f"{int(labels.min())}..{int(labels.max())}."
        )
    image = contrast.intensities.to(torch.float32)[labels]
    return blur(image, contrast.blur_sigma)


def finish_image(tissue: torch.Tensor, contrast: Contrast) -> torch.Tensor:
    """Apply the bias field and noise of ``contrast`` to ``tissue`` and clip to ``[0, 1]``."""
    return (tissue * contrast.bias + contrast.noise).clamp(0.0, 1.0)


def apply_contrast(labels: torch.Tensor, contrast: Contrast) -> torch.Tensor:
    """Render ``labels (1, 1, *spatial)`` deterministically with ``contrast``; values in [0, 1]."""
    return finish_image(tissue_image(labels, contrast), contrast)


def check_labels(labels: object) -> torch.Tensor:
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
    labels = check_labels(labels)
    contrast = sample_contrast(tuple(labels.shape[2:]), int(labels.max()) + 1, generator,
                               max_blur=max_blur, max_bias=max_bias, max_noise=max_noise)
    return apply_contrast(labels, contrast)
