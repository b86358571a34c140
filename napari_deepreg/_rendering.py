"""Pictures of a registration, as plain numpy arrays on the fixed grid (no napari, no torch).

- :func:`deformation_grid`: grid lines of the moving space drawn through ``phi(x) = x + u(x)``,
  i.e. a regular grid image warped like the moving image. 2D images and slices of volumes show
  the iso-lines of the displayed components of ``phi``; a 3D rendering shows the lattice lines.
- :func:`checkerboard`, :func:`difference`: compare the fixed and the warped image.
- :func:`displacement_magnitude`: ``|u|`` in physical units.
- :func:`jacobian_limits`: contrast limits centred on 1 for a diverging colormap.

Displacements follow ``docs/conventions.md``: ``(ndim, *spatial)``, channel ``i`` along array
axis ``i``, in fixed voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check_field(displacement: np.ndarray) -> np.ndarray:
    u = np.asarray(displacement, dtype=np.float32)
    if u.ndim not in (3, 4) or u.shape[0] != u.ndim - 1:
        raise ValueError(
            f"displacement: expected shape (2, H, W) or (3, D, H, W) (one channel per spatial "
            f"axis, in voxels), got {u.shape}."
        )
    return u


def grid_period(shape: Sequence[int], lines: int = 20) -> int:
    """A grid spacing in voxels that draws about ``lines`` lines across the largest axis."""
    return max(4, int(round(max(shape) / lines)))


def grid_upsampling(shape: Sequence[int], max_voxels: int = 4_000_000, largest: int = 4) -> int:
    """The largest factor ``f <= largest`` with ``f**ndim * prod(shape) <= max_voxels`` (>= 1)."""
    voxels = float(np.prod(shape))
    factor = 1
    for f in range(2, largest + 1):
        if f ** len(shape) * voxels <= max_voxels:
            factor = f
    return factor


def upsampled_shape(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    """``(n - 1) * factor + 1`` per axis: the corners stay on the corners."""
    return tuple((int(n) - 1) * factor + 1 for n in shape)


def _line_profiles(
    u: np.ndarray, axes: Sequence[int], period: float, width: float, factor: int
) -> dict[int, np.ndarray]:
    """Per axis ``a``: 1 on the iso-lines ``phi_a = k * period``, fading to 0 over ``width`` px.

    ``u`` lives on a grid ``factor`` times finer than the fixed grid; ``phi`` is in fixed voxels.
    """
    coordinates = [np.arange(n, dtype=np.float32) / factor for n in u.shape[1:]]
    profiles = {}
    for a in axes:
        shape = [1] * (u.ndim - 1)
        shape[a] = -1
        phi = coordinates[a].reshape(shape) + u[a]
        # distance to the nearest grid line, in fixed voxels ...
        distance = np.abs(phi / period - np.round(phi / period)) * period
        # ... turned into on-screen pixels by the local stretch of phi_a (fixed voxels per pixel)
        stretch = np.sqrt(sum(g * g for g in np.gradient(phi)))
        distance = distance / np.maximum(stretch, 1e-3 / factor)
        profiles[a] = np.clip(1.0 - distance / max(width, 1e-3), 0.0, 1.0)
    return profiles


def deformation_grid(
    displacement: np.ndarray,
    *,
    displayed: Sequence[int] | None = None,
    period: int | None = None,
    width: float = 1.0,
    factor: int = 1,
) -> np.ndarray:
    """Render the deformation as grid lines, an image on (a finer copy of) the fixed grid.

    Parameters
    ----------
    displacement : np.ndarray
        ``(ndim, *spatial)`` in fixed voxels, ``phi(x) = x + u(x)``.
    displayed : sequence of int, optional
        The array axes shown on screen. Two axes: the iso-lines of those components of ``phi``
        (what a slice shows). Three axes (3D rendering): the lattice lines, where two of the three
        components sit on the grid. Default: every axis for 2D data, the last two for 3D data.
    period : int, optional
        Grid spacing in fixed voxels (default :func:`grid_period`).
    width : float
        Line half-width in pixels of the output (anti-aliased).
    factor : int
        Render on a grid ``factor`` times finer (shape :func:`upsampled_shape`), for thin lines
        on small images; show it with the fixed layer's scale divided by ``factor``.

    Returns
    -------
    np.ndarray
        float32 image, 1 on the lines and 0 between them, shape ``upsampled_shape(spatial,
        factor)``. For a zero field the lines are the straight rows/columns at multiples of
        ``period`` fixed voxels.

    Examples
    --------
    >>> grid = deformation_grid(np.zeros((2, 9, 9)), period=4)
    >>> grid[4].tolist() == [1.0] * 9, float(grid[3, 3])
    (True, 0.0)
    """
    u = _check_field(displacement)
    ndim = u.shape[0]
    if displayed is None:
        displayed = tuple(range(ndim)) if ndim == 2 else (ndim - 2, ndim - 1)
    axes = tuple(sorted(set(int(a) for a in displayed)))
    if not axes or any(a < 0 or a >= ndim for a in axes):
        raise ValueError(f"displayed: expected axes in 0..{ndim - 1}, got {tuple(displayed)}.")
    period = grid_period(u.shape[1:]) if period is None else int(period)
    if period < 2:
        raise ValueError(f"period: expected at least 2 voxels, got {period}.")
    if int(factor) < 1:
        raise ValueError(f"factor: expected an integer >= 1, got {factor}.")
    factor = int(factor)
    if factor > 1:
        from scipy.ndimage import zoom

        target = upsampled_shape(u.shape[1:], factor)
        ratio = [t / n for t, n in zip(target, u.shape[1:])]
        u = np.stack([zoom(c, ratio, order=1, grid_mode=False) for c in u])
    profiles = _line_profiles(u, axes, float(period), width, factor)
    if len(axes) <= 2:
        return np.maximum.reduce([profiles[a] for a in axes]).astype(np.float32)
    pairs = [(a, b) for i, a in enumerate(axes) for b in axes[i + 1:]]
    return np.maximum.reduce([np.minimum(profiles[a], profiles[b]) for a, b in pairs]).astype(
        np.float32
    )


def _normalise(image: np.ndarray) -> np.ndarray:
    """Robust 1..99 percentile scaling to [0, 1]."""
    image = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(image, [1.0, 99.0])
    if high <= low:
        low, high = float(image.min()), float(image.max())
    if high <= low:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def checkerboard(fixed: np.ndarray, warped: np.ndarray, tiles: int = 8) -> np.ndarray:
    """Alternate tiles of the (normalised) fixed and warped images.

    Parameters
    ----------
    fixed, warped : np.ndarray
        Same spatial shape.
    tiles : int
        Tiles along each axis.

    Returns
    -------
    np.ndarray
        float32 in [0, 1]; tile ``(0, 0, ...)`` shows the fixed image.

    Examples
    --------
    >>> stripes = np.tile([0.0, 1.0], (4, 2))  # columns 0, 1, 0, 1
    >>> board = checkerboard(np.zeros((4, 4)), stripes, tiles=2)
    >>> board[0].tolist(), board[2].tolist()
    ([0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0])
    """
    fixed, warped = np.asarray(fixed), np.asarray(warped)
    if fixed.shape != warped.shape:
        raise ValueError(
            f"checkerboard: expected images of one shape, got {fixed.shape} and {warped.shape}."
        )
    parity = np.zeros(fixed.shape, dtype=np.int64)
    for axis, n in enumerate(fixed.shape):
        index = (np.arange(n) * tiles) // max(n, 1)
        parity = parity + index.reshape([-1 if i == axis else 1 for i in range(fixed.ndim)])
    mask = (parity % 2).astype(bool)
    return np.where(mask, _normalise(warped), _normalise(fixed)).astype(np.float32)


def difference(fixed: np.ndarray, warped: np.ndarray) -> np.ndarray:
    """``normalised(warped) - normalised(fixed)``, float32 in [-1, 1] (0 where they agree)."""
    fixed, warped = np.asarray(fixed), np.asarray(warped)
    if fixed.shape != warped.shape:
        raise ValueError(
            f"difference: expected images of one shape, got {fixed.shape} and {warped.shape}."
        )
    return (_normalise(warped) - _normalise(fixed)).astype(np.float32)


def displacement_magnitude(
    displacement: np.ndarray, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """``|u|`` per voxel, in the units of ``spacing`` (voxels when None), float32."""
    u = _check_field(displacement)
    h = np.ones(u.shape[0]) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if h.shape != (u.shape[0],):
        raise ValueError(f"spacing: expected {u.shape[0]} values, got {tuple(np.ravel(h))}.")
    scaled = u * h.reshape((-1,) + (1,) * (u.ndim - 1)).astype(np.float32)
    return np.sqrt(np.sum(scaled * scaled, axis=0)).astype(np.float32)


def jacobian_limits(jacobian: np.ndarray, minimum_range: float = 0.05) -> tuple[float, float]:
    """Contrast limits ``(1 - r, 1 + r)`` centred on 1, ``r`` the 99th percentile of ``|J - 1|``.

    Examples
    --------
    >>> jacobian_limits(np.ones((4, 4)))
    (0.95, 1.05)
    """
    values = np.asarray(jacobian, dtype=np.float64)
    values = values[np.isfinite(values)]
    spread = float(np.percentile(np.abs(values - 1.0), 99.0)) if values.size else 0.0
    spread = max(spread, minimum_range)
    return (1.0 - spread, 1.0 + spread)


def inverse_points(displacement: np.ndarray, points: np.ndarray, iterations: int = 8) -> np.ndarray:
    """Fixed-grid positions ``x`` with ``x + u(x) = y`` for moving-space points ``y``, ``(N, ndim)``.

    Fixed-point iteration ``x <- y - u(x)`` (linear interpolation of ``u``), exact for a constant
    field and within a small fraction of a voxel for smooth fields without folds.
    """
    from scipy.ndimage import map_coordinates

    u = _check_field(displacement)
    y = np.asarray(points, dtype=np.float64)
    x = y.copy()
    for _ in range(iterations):
        shift = np.stack([map_coordinates(c, x.T, order=1, mode="nearest") for c in u], axis=1)
        x = y - shift
    return x


def grid_paths(displacement: np.ndarray, lines: int = 6, samples: int = 2) -> list[np.ndarray]:
    """The lattice lines of the moving space drawn in the fixed grid, as 3D polylines.

    What a 3D view shows instead of a voxel image (whose one-voxel lines read as a cross-hatch):
    about ``lines`` lines per axis pair, each sampled ``samples`` times per voxel and pulled back
    through ``phi^-1`` (:func:`inverse_points`).

    Parameters
    ----------
    displacement : np.ndarray
        ``(3, D, H, W)`` in fixed voxels.

    Returns
    -------
    list of np.ndarray
        Polylines ``(N, 3)`` in fixed voxel coordinates (array axis order).

    Examples
    --------
    >>> paths = grid_paths(np.zeros((3, 9, 9, 9)), lines=2)
    >>> len(paths), paths[0][0].tolist(), paths[0][-1].tolist()
    (27, [0.0, 0.0, 0.0], [8.0, 0.0, 0.0])
    """
    u = _check_field(displacement)
    if u.shape[0] != 3:
        raise ValueError(f"displacement: expected a 3D field (3, D, H, W), got {u.shape}.")
    shape = u.shape[1:]
    period = max(2, int(round(max(shape) / max(lines, 1))))
    paths = []
    for along in range(3):
        across = [a for a in range(3) if a != along]
        t = np.linspace(0.0, shape[along] - 1.0, samples * (shape[along] - 1) + 1)
        for i in range(0, shape[across[0]], period):
            for j in range(0, shape[across[1]], period):
                points = np.zeros((t.size, 3))
                points[:, along], points[:, across[0]], points[:, across[1]] = t, i, j
                paths.append(inverse_points(u, points))
    return paths
