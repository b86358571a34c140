"""An image in physical space: a spatial array plus its voxel-to-world affine.

``Image.data`` is the spatial array in array order (``(y, x)`` in 2D, ``(z, y, x)`` in 3D; for a
NIfTI file the order of its data array, ``(i, j, k)``). ``Image.affine`` is the homogeneous
``(ndim + 1, ndim + 1)`` matrix that maps a voxel index to world coordinates::

    [world; 1] = affine @ [index; 1]

For NIfTI the world is nibabel's RAS+ in mm; for TIFF/PNG it is ``diag(spacing)`` with the world
axes in array order (see ``docs/conventions.md``). ``spacing``, ``origin`` and ``direction`` are
read off the affine: ``affine[:ndim, :ndim] = direction @ diag(spacing)`` and
``affine[:ndim, ndim] = origin``.

``meta`` keeps format details that do not affect the geometry (the NIfTI header, the source path,
the TIFF unit) so that results can be saved back with the right header (``deepreg_core.io``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Image"]

# An affine whose linear part has a condition number above this is treated as singular.
_MAX_CONDITION = 1e12


def _as_vector(values: Sequence[float] | np.ndarray, ndim: int, name: str) -> np.ndarray:
    """Return ``values`` as a finite float64 vector of length ``ndim``."""
    vector = np.asarray(values, dtype=np.float64)
    if vector.shape != (ndim,) or not np.all(np.isfinite(vector)):
        raise ValueError(
            f"{name}: expected {ndim} finite values (one per spatial axis, array order), got "
            f"{np.asarray(values).tolist()}."
        )
    return vector


def _as_points(points: np.ndarray | Sequence[Sequence[float]], ndim: int, name: str) -> np.ndarray:
    """Return ``points`` as a finite float64 array ``(N, ndim)`` (a single point may be 1-D)."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim not in (1, 2) or array.shape[-1] != ndim:
        raise ValueError(
            f"{name}: expected an array of shape (N, {ndim}) (one row per point, array order), "
            f"got shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: expected finite coordinates, got NaN or infinite values.")
    return array


@dataclass(frozen=True, eq=False, repr=False)
class Image:
    """A 2D or 3D spatial array with its homogeneous voxel-to-world affine.

    Parameters
    ----------
    data : np.ndarray
        Spatial array, shape ``(H, W)`` or ``(D, H, W)`` (array order). Any numeric dtype; label
        images keep their integer dtype.
    affine : np.ndarray
        Voxel-to-world matrix, shape ``(ndim + 1, ndim + 1)``, last row ``[0, ..., 0, 1]``, finite
        and invertible. World units are mm for NIfTI, the file's unit (``meta["unit"]``) for TIFF.
        Stored as a read-only float64 copy.
    meta : Mapping
        Format details kept for writing back (``"nifti_header"``, ``"source"``, ``"unit"``,
        ``"converted_from_rgb"``, ...). Stored as a shallow ``dict`` copy.

    Examples
    --------
    >>> import numpy as np
    >>> img = Image.from_array(np.zeros((4, 5, 6)), spacing=(2.0, 1.0, 0.5))
    >>> img.spacing
    (2.0, 1.0, 0.5)
    >>> img.index_to_world(np.array([[1.0, 1.0, 2.0]])).tolist()
    [[2.0, 1.0, 1.0]]
    """

    data: np.ndarray
    affine: np.ndarray
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        data = self.data
        if not isinstance(data, np.ndarray):
            raise TypeError(
                f"data: expected a numpy array, got {type(data).__name__}. "
                "Convert it with np.asarray(data)."
            )
        if data.ndim not in (2, 3):
            raise ValueError(
                f"data: expected a 2D (H, W) or 3D (D, H, W) spatial array, got shape "
                f"{data.shape} ({data.ndim} dimensions). Remove channel/time axes first "
                "(e.g. data[..., 0] or np.squeeze)."
            )
        if data.size == 0:
            raise ValueError(f"data: expected a non-empty array, got shape {data.shape}.")
        if not (np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_):
            raise TypeError(f"data: expected a numeric array, got dtype {data.dtype}.")

        size = data.ndim + 1
        affine = np.array(self.affine, dtype=np.float64)  # a copy, so the caller keeps theirs
        if affine.shape != (size, size):
            raise ValueError(
                f"affine: expected shape ({size}, {size}) for {data.ndim}D data of shape "
                f"{data.shape}, got {affine.shape}."
            )
        if not np.all(np.isfinite(affine)):
            raise ValueError(f"affine: expected finite values, got NaN or infinity:\n{affine}")
        expected_last_row = np.eye(size)[-1]
        if not np.allclose(affine[-1], expected_last_row):
            raise ValueError(
                f"affine: expected a homogeneous last row {expected_last_row.tolist()}, got "
                f"{affine[-1].tolist()}."
            )
        linear = affine[:-1, :-1]
        if np.linalg.cond(linear) > _MAX_CONDITION:
            raise ValueError(
                f"affine: expected an invertible voxel-to-world matrix, got a singular linear part "
                f"(determinant {np.linalg.det(linear):.3g}):\n{linear}\n"
                "Every voxel axis needs a non-zero spacing and its own direction."
            )
        affine.flags.writeable = False
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "meta", dict(self.meta) if self.meta is not None else {})

    def __repr__(self) -> str:
        spacing = tuple(round(s, 6) for s in self.spacing)
        origin = tuple(round(float(o), 6) for o in self.origin)
        return (
            f"Image(shape={self.shape}, dtype={self.data.dtype}, spacing={spacing}, "
            f"origin={origin})"
        )

    # ------------------------------------------------------------------ geometry
    @property
    def ndim(self) -> int:
        """Number of spatial axes, 2 or 3."""
        return self.data.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape in array order."""
        return tuple(self.data.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size along each array axis (column norms of the affine's linear part)."""
        linear = self.affine[:-1, :-1]
        return tuple(float(s) for s in np.linalg.norm(linear, axis=0))

    @property
    def origin(self) -> np.ndarray:
        """World position of the centre of voxel ``(0, ..., 0)``, shape ``(ndim,)``."""
        return self.affine[:-1, -1].copy()

    @property
    def direction(self) -> np.ndarray:
        """Unit world direction of each array axis (as columns), shape ``(ndim, ndim)``."""
        return self.affine[:-1, :-1] / np.asarray(self.spacing)

    # ------------------------------------------------------------- construction
    @classmethod
    def from_array(
        cls,
        data: np.ndarray,
        spacing: Sequence[float] | None = None,
        origin: Sequence[float] | None = None,
        direction: np.ndarray | Sequence[Sequence[float]] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Image:
        """Build an image from an array and its spacing, origin and direction.

        Parameters
        ----------
        data : np.ndarray
            Spatial array, shape ``(H, W)`` or ``(D, H, W)``.
        spacing : sequence of float, optional
            Positive voxel size per array axis (world units, e.g. mm). Default 1.0 each.
        origin : sequence of float, optional
            World position of voxel ``(0, ..., 0)``. Default zeros.
        direction : array-like, optional
            ``(ndim, ndim)`` matrix whose column ``i`` is the world direction of array axis ``i``.
            Default identity (world axes in array order).
        meta : Mapping, optional
            Format details (see :class:`Image`).

        Returns
        -------
        Image
            With ``affine[:ndim, :ndim] = direction @ diag(spacing)`` and
            ``affine[:ndim, ndim] = origin``.

        Examples
        --------
        >>> import numpy as np
        >>> Image.from_array(np.zeros((8, 8)), spacing=(0.5, 0.25), origin=(10.0, -3.0)).affine
        array([[ 0.5 ,  0.  , 10.  ],
               [ 0.  ,  0.25, -3.  ],
               [ 0.  ,  0.  ,  1.  ]])
        """
        array = np.asarray(data)
        ndim = array.ndim
        if ndim not in (2, 3):
            raise ValueError(
                f"data: expected a 2D (H, W) or 3D (D, H, W) spatial array, got shape "
                f"{array.shape} ({ndim} dimensions)."
            )
        spacing_v = np.ones(ndim) if spacing is None else _as_vector(spacing, ndim, "spacing")
        if np.any(spacing_v <= 0):
            raise ValueError(
                f"spacing: expected {ndim} positive values, got {spacing_v.tolist()}."
            )
        origin_v = np.zeros(ndim) if origin is None else _as_vector(origin, ndim, "origin")
        if direction is None:
            direction_m = np.eye(ndim)
        else:
            direction_m = np.asarray(direction, dtype=np.float64)
            if direction_m.shape != (ndim, ndim) or not np.all(np.isfinite(direction_m)):
                raise ValueError(
                    f"direction: expected a finite ({ndim}, {ndim}) matrix (one column per array "
                    f"axis), got shape {direction_m.shape}."
                )
        affine = np.eye(ndim + 1)
        affine[:ndim, :ndim] = direction_m * spacing_v  # scales column i by spacing[i]
        affine[:ndim, ndim] = origin_v
        return cls(array, affine, {} if meta is None else meta)

    def with_data(self, data: np.ndarray) -> Image:
        """Return an image with new data on the same grid (same affine and meta).

        Parameters
        ----------
        data : np.ndarray
            Array with exactly this image's spatial shape; any numeric dtype.

        Examples
        --------
        >>> import numpy as np
        >>> img = Image.from_array(np.zeros((4, 4)), spacing=(2.0, 2.0))
        >>> img.with_data(np.ones((4, 4))).spacing
        (2.0, 2.0)
        """
        array = np.asarray(data)
        if array.shape != self.shape:
            raise ValueError(
                f"data: expected shape {self.shape} (the grid of this image), got {array.shape}. "
                "Resample it onto this grid first (deepreg_core.spatial.resample_to)."
            )
        return Image(array, self.affine, self.meta)

    # ---------------------------------------------------------- coordinates
    def index_to_world(self, points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Map voxel indices (array order) to world coordinates.

        Parameters
        ----------
        points : array-like
            Voxel indices, shape ``(N, ndim)`` (or ``(ndim,)`` for one point); fractional
            indices are allowed.

        Returns
        -------
        np.ndarray
            World coordinates, same shape as ``points``, float64.

        Examples
        --------
        >>> import numpy as np
        >>> Image.from_array(np.zeros((4, 4)), origin=(1.0, 2.0)).index_to_world([[0, 0]]).tolist()
        [[1.0, 2.0]]
        """
        array = _as_points(points, self.ndim, "points")
        return array @ self.affine[:-1, :-1].T + self.affine[:-1, -1]

    def world_to_index(self, points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Map world coordinates to (fractional) voxel indices in array order.

        Parameters
        ----------
        points : array-like
            World coordinates, shape ``(N, ndim)`` (or ``(ndim,)`` for one point).

        Returns
        -------
        np.ndarray
            Voxel indices, same shape as ``points``, float64 (not rounded).

        Examples
        --------
        >>> import numpy as np
        >>> img = Image.from_array(np.zeros((4, 4)), spacing=(2.0, 0.5))
        >>> img.world_to_index([[4.0, 1.0]]).tolist()
        [[2.0, 2.0]]
        """
        array = _as_points(points, self.ndim, "points")
        linear = self.affine[:-1, :-1]
        offset = self.affine[:-1, -1]
        return np.linalg.solve(linear, (array - offset).T).T.reshape(array.shape)
