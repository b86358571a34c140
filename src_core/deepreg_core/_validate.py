"""Input checks shared by the core's public functions.

Every check raises ``TypeError`` or ``ValueError`` with a message that says what was expected,
what arrived, and how to fix it. Never use ``assert`` for input checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_tensor(x: object, name: str) -> torch.Tensor:
    """Require a torch tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name}: expected a torch.Tensor, got {type(x).__name__}. "
            "Convert arrays with torch.as_tensor(array)."
        )
    return x


def check_floating(x: torch.Tensor, name: str) -> torch.Tensor:
    """Require a floating-point tensor."""
    if not x.is_floating_point():
        raise TypeError(
            f"{name}: expected a floating-point tensor, got dtype {x.dtype}. "
            "Cast it with .float() first."
        )
    return x


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Require a non-empty tensor with no NaN or infinity."""
    if x.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor, got shape {tuple(x.shape)}.")
    # a sum is finite iff every term is (one pass, no mask allocated); only if it overflowed
    # or met a NaN/inf does the exact, slower test run
    if x.is_floating_point() and not bool(torch.isfinite(x.sum())) and not bool(
        torch.isfinite(x).all()
    ):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{name}: expected finite values, got {n_bad} NaN or infinite value(s) out of "
            f"{x.numel()}. Replace them (e.g. torch.nan_to_num) or mask them out."
        )
    return x


def check_image(x: object, name: str, ndim: int | None = None) -> torch.Tensor:
    """Require a finite float tensor shaped ``(B, C, *spatial)`` with 2 or 3 spatial axes."""
    x = check_finite(check_floating(check_tensor(x, name), name), name)
    if x.dim() not in (4, 5):
        raise ValueError(
            f"{name}: expected shape (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)} "
            f"({x.dim()} dimensions). Add batch and channel axes with x[None, None]."
        )
    if ndim is not None and x.dim() - 2 != ndim:
        raise ValueError(
            f"{name}: expected {ndim} spatial dimensions, got {x.dim() - 2} "
            f"(shape {tuple(x.shape)})."
        )
    return x


def check_displacement(u: object, name: str = "displacement") -> torch.Tensor:
    """Require a finite float field shaped ``(B, ndim, *spatial)`` with ndim in (2, 3)."""
    u = check_finite(check_floating(check_tensor(u, name), name), name)
    if u.dim() not in (4, 5) or u.shape[1] != u.dim() - 2:
        raise ValueError(
            f"{name}: expected shape (B, 2, H, W) or (B, 3, D, H, W) (one channel per spatial "
            f"axis), got {tuple(u.shape)}."
        )
    return u


def check_same_spatial(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Require equal spatial shapes (all axes after the channel axis)."""
    if a.dim() != b.dim() or a.shape[2:] != b.shape[2:]:
        raise ValueError(
            f"{name_a} and {name_b} must share their spatial shape: got {tuple(a.shape)} and "
            f"{tuple(b.shape)}. Resample one onto the other's grid first "
            "(deepreg_core.spatial.resample_to)."
        )


def check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Return spacing as a tuple of ``ndim`` positive floats (1.0 each when None)."""
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or any(not s > 0 for s in values):
        raise ValueError(
            f"spacing: expected {ndim} positive values (one per spatial axis, in mm), got "
            f"{tuple(spacing)}."
        )
    return values
