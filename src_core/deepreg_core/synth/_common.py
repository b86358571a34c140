"""Checks and small random helpers shared by the synthetic-data generators."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from deepreg_core._diff import gaussian_kernel, separable_filter

GeneratorLike = torch.Generator | int



GeneratorLike = torch.Generator | int


# ----------------------------------------------------------------------------- checks and helpers


def as_generator(generator: object) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(int(generator))
    raise TypeError(
        f"generator: expected a torch.Generator or an integer seed, got {type(generator).__name__}."
    )


def check_shape(shape: object) -> tuple[int, ...]:
    try:
        values = tuple(int(n) for n in shape)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"shape: expected a sequence of 2 or 3 integers, got {shape!r}.") from None
    if len(values) not in (2, 3) or any(n < 2 for n in values):
        raise ValueError(f"shape: expected 2 or 3 sizes, each >= 2, got {values}.")
    return values


def non_negative(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite value >= 0, got {value}.")
    return value


def positive(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite value > 0, got {value}.")
    return value


def uniform(generator: torch.Generator, low: float, high: float, size: int = 1) -> torch.Tensor:
    return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(B, C, *spatial)`` along every spatial axis (replicated borders)."""
    if sigma <= 0:
        return x
    return separable_filter(x, gaussian_kernel(sigma), padding_mode="replicate")


def smooth_noise(
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
    field = blur(field, scale / 2 / factor)
    if tuple(middle) != tuple(shape):
        field = F.interpolate(field, size=shape, mode=mode, align_corners=True)
    return field
