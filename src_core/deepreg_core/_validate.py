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


def check_shape(shape: Sequence[int], name: str = "shape") -> tuple[int, ...]:
    if not isinstance(shape, Sequence) or not all(isinstance(n, int) for n in shape):
        raise TypeError(f"{name}: expected a sequence of 2 or 3 ints, got {shape!r}.")
    values = tuple(int(n) for n in shape)
    if len(values) not in (2, 3) or any(n < 1 for n in values):
        raise ValueError(f"{name}: expected 2 or 3 positive sizes, got {values}.")
    return values


def check_moving(image: object, mode: str, name: str = "image") -> torch.Tensor:
    """A float image, or an integer/bool label image when ``mode == "nearest"``."""
    image = check_tensor(image, name)
    if image.is_floating_point():
        return check_image(image, name)
    if mode != "nearest" or image.is_complex():
        raise TypeError(
            f"{name}: expected a floating-point tensor for mode={mode!r}, got dtype {image.dtype}. "
            "Cast it with .float(), or pass mode='nearest' for integer labels."
        )
    if image.dim() not in (4, 5):
        raise ValueError(
            f"{name}: expected shape (B, C, H, W) or (B, C, D, H, W), got {tuple(image.shape)}."
        )
    return check_finite(image, name)


def check_field(u: object, ndim: int, name: str = "displacement") -> torch.Tensor:
    """A finite float field with ``ndim`` spatial axes and ``ndim`` channels."""
    u = check_finite(check_floating(check_tensor(u, name), name), name)
    if u.dim() != ndim + 2:
        raise ValueError(
            f"{name}: expected {ndim} spatial axes like the image, i.e. {ndim + 2} dimensions "
            f"(B, {ndim}, *spatial), got {u.dim()} (shape {tuple(u.shape)})."
        )
    if u.shape[1] != ndim:
        raise ValueError(
            f"{name}: expected {ndim} channels (one per spatial axis), got {u.shape[1]} "
            f"(shape {tuple(u.shape)})."
        )
    return u


def check_batch_pair(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> int:
    """Same device, batch sizes equal or one of them 1; return the broadcast batch size."""
    if a.device != b.device:
        raise ValueError(
            f"{name_a} and {name_b} must be on the same device: got {a.device} and {b.device}. "
            "Move one with .to(device)."
        )
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(
            f"{name_a} and {name_b}: expected equal batch sizes or a batch of 1, got "
            f"{a.shape[0]} and {b.shape[0]}."
        )
    return max(a.shape[0], b.shape[0])


def check_matrix(matrix: object, ndim: int, name: str = "matrix") -> torch.Tensor:
    """A homogeneous matrix, returned batched as ``(B, ndim + 1, ndim + 1)``."""
    A = check_finite(check_floating(check_tensor(matrix, name), name), name)
    if A.dim() not in (2, 3) or A.shape[-2:] != (ndim + 1, ndim + 1):
        raise ValueError(
            f"{name}: expected shape ({ndim + 1}, {ndim + 1}) or (B, {ndim + 1}, {ndim + 1}) "
            f"for {ndim} spatial axes, got {tuple(A.shape)}."
        )
    last = torch.zeros(ndim + 1, dtype=A.dtype, device=A.device)
    last[ndim] = 1
    if not torch.allclose(A[..., ndim, :], last.expand_as(A[..., ndim, :])):
        raise ValueError(
            f"{name}: expected a homogeneous affine with last row {tuple(last.tolist())}, got "
            f"{A[..., ndim, :].tolist()}."
        )
    return A if A.dim() == 3 else A[None]


def check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}.")
    return value


def check_batched_image(x: object, name: str) -> torch.Tensor:
    x = check_floating(check_tensor(x, name), name)
    if x.dim() not in (4, 5):
        raise ValueError(
            f"{name}: expected shape (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)} "
            f"({x.dim()} dimensions)."
        )
    return x


def check_label_tensor(x: object, name: str) -> torch.Tensor:
    x = check_tensor(x, name)
    if x.is_floating_point() or x.is_complex():
        raise TypeError(
            f"{name}: expected an integer (or bool) label tensor, got dtype {x.dtype}. "
            "Round and cast it with .round().long()."
        )
    if x.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor, got shape {tuple(x.shape)}.")
    return x


def check_points(p: object, name: str) -> torch.Tensor:
    p = check_finite(check_floating(check_tensor(p, name), name), name)
    if p.dim() != 2 or p.shape[1] not in (2, 3):
        raise ValueError(
            f"{name}: expected shape (N, 2) or (N, 3) (voxel indices in array order), got "
            f"{tuple(p.shape)}."
        )
    return p


def check_image_pair(a: object, b: object, names: tuple[str, str] = ("a", "b")) -> None:
    a = check_image(a, names[0])
    b = check_image(b, names[1])
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]}: expected the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}. Resample one onto the other's grid "
            "(deepreg_core.spatial.resample_to) and match the channels."
        )
