"""Displacement fields as napari layers and files, and their Jacobian analysis.

A displacement-field layer is a napari Image layer that holds the field in its metadata
(``metadata[FIELD_DATA_KEY]``, ``(ndim, *spatial)`` in voxels, the layer showing ``|u|``: what
File -> Open and the Inspect widget make of a displacement NIfTI), or whose data has one vector
axis of size ``ndim`` (2 or 3) before or after the ``ndim`` spatial axes: ``(ndim, *spatial)`` (our
convention, ``docs/conventions.md``) or ``(*spatial, ndim)`` (vectors last, as many tools save
them). The vectors are taken along the array axes, in voxels of the field's grid, or in world
units along the array axes (``units="world"``: divided by the layer's scale).

Files go through ``deepreg_core.api.read_displacement``: ITK/ANTs displacement NIfTI
``(X, Y, Z, 1, 3)`` (2D ``(X, Y, 1, 1, 2)``) with LPS mm vectors (intent 1007, what ANTs and ITK
write) or RAS mm vectors (intent 1006), converted to voxels through the header affine (signs of
x and y flipped for LPS, then ``inv(affine[:ndim, :ndim])``, which handles spacing, flips and
oblique axes). We assume the field maps a point of the file's grid to the point sampled in the
moving image (ITK's and ANTs' direction, the same as ours).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepreg_core import api
from napari_deepreg._layers import (
    FIELD_DATA_KEY,
    FIELD_KEY,
    LayerDataTuple,
    layer_world_matrix,
    metadata_for,
    placement_from_affine,
)


def analyse_field(displacement: np.ndarray) -> Any:
    """Jacobian map, fold mask and folding fraction of a voxel field ``(ndim, *spatial)``.

    The core's ``field_quality`` (a ``FieldQuality``: ``jacobian``, ``folds``,
    ``folding_fraction``).

    Examples
    --------
    >>> stats = analyse_field(np.zeros((2, 8, 8), np.float32))
    >>> float(stats.jacobian.mean()), stats.folding_fraction
    (1.0, 0.0)
    """
    return api.field_quality(displacement)


def vector_axis(shape: tuple[int, ...]) -> int | None:
    """Which axis of ``shape`` holds the vectors (0 or -1), or None if it is no field.

    Examples
    --------
    >>> vector_axis((2, 16, 16)), vector_axis((8, 8, 8, 3)), vector_axis((16, 16))
    (0, -1, None)
    """
    if len(shape) not in (3, 4):
        return None
    ndim = len(shape) - 1
    if shape[0] == ndim:
        return 0
    if shape[-1] == ndim:
        return -1
    return None


def is_field_layer(layer: Any) -> bool:
    """Whether a napari layer looks like a displacement field (see the module docstring)."""
    if layer.__class__.__name__ != "Image" or getattr(layer, "multiscale", False):
        return False
    if isinstance(layer.metadata.get(FIELD_DATA_KEY), np.ndarray):
        return True
    return vector_axis(tuple(np.shape(layer.data))) is not None


def field_from_layer(layer: Any, units: str = "voxels") -> tuple[np.ndarray, np.ndarray]:
    """A layer's displacement field in voxels, and the voxel-to-world matrix of its grid.

    Parameters
    ----------
    layer : napari.layers.Image
        A field layer (:func:`is_field_layer`).
    units : {"voxels", "world"}
        What the vectors measure: voxels of the field's grid, or world units along the array
        axes (divided by the grid's spacing).

    Returns
    -------
    u : np.ndarray
        ``(ndim, *spatial)`` float32 copy, voxels.
    spatial_matrix : np.ndarray
        ``(ndim + 1, ndim + 1)`` voxel-to-world matrix of the spatial axes.

    Raises
    ------
    TypeError, ValueError
        Not an Image layer, no vector axis, non-finite values, unknown units.
    """
    if units not in ("voxels", "world"):
        raise ValueError(f"units: expected 'voxels' or 'world', got {units!r}.")
    if layer is None:
        raise ValueError(
            "field: no layer chosen. Pick an Image layer holding a displacement field."
        )
    if layer.__class__.__name__ != "Image":
        raise TypeError(f"field: expected a napari Image layer, got {layer.__class__.__name__}.")
    held = layer.metadata.get(FIELD_DATA_KEY)
    if isinstance(held, np.ndarray):  # a field opened from a file: vectors in voxels
        return np.array(held, dtype=np.float32), layer_world_matrix(layer)
    data = np.asarray(layer.data)
    axis = vector_axis(data.shape)
    if axis is None:
        raise ValueError(
            f"field: layer {layer.name!r} of shape {data.shape} is not a displacement field. "
            "Expected (2, H, W), (H, W, 2), (3, D, H, W) or (D, H, W, 3)."
        )
    u = np.array(np.moveaxis(data, axis, 0), dtype=np.float32)
    if not np.all(np.isfinite(u)):
        raise ValueError(f"field: layer {layer.name!r} holds NaN or infinite vectors.")
    ndim = u.shape[0]
    matrix = layer_world_matrix(layer)
    if matrix.shape[0] == ndim + 2:  # the vector axis is a layer axis: drop it
        first = 1 if axis == 0 else 0
        keep = [*range(first, first + ndim), ndim + 1]
        matrix = matrix[np.ix_(keep, keep)]
    if units == "world":
        spacing = np.linalg.norm(matrix[:ndim, :ndim], axis=0)
        u = u / spacing.reshape((-1,) + (1,) * ndim).astype(np.float32)
    return u, matrix


def read_field_file(path: str) -> tuple[np.ndarray, Any]:
    """Read an ITK/ANTs displacement NIfTI: ``(u_vox (ndim, *S), grid Image)``.

    See the module docstring for the conventions assumed; errors are ValueError with the
    expected shape.
    """
    return api.read_displacement(path)


def field_layer_data(path: str) -> LayerDataTuple:
    """A displacement NIfTI as a layer of its magnitude ``|u|`` holding the field (voxels).

    The layer has the field's spatial axes only, so no dims slider appears for the vectors;
    the Inspect widget reads the field from ``metadata[FIELD_DATA_KEY]``.
    """
    from deepreg_core.api import image_stem
    from napari_deepreg._rendering import displacement_magnitude

    u, grid = read_field_file(path)
    metadata = metadata_for(grid, {FIELD_KEY: "voxels", FIELD_DATA_KEY: u})
    magnitude = displacement_magnitude(u, grid.spacing)
    kwargs = {"name": f"{image_stem(path)} field", "metadata": metadata, "colormap": "viridis",
              "visible": False, **placement_from_affine(np.asarray(grid.affine))}
    return magnitude, kwargs, "image"


def looks_like_field_file(path: str) -> bool:
    """Whether a NIfTI header describes a displacement field (intent 1006/1007, or a 5D
    ``(X, Y, Z, 1, ndim)`` shape), read from the header only."""
    try:
        import nibabel as nib

        header = nib.load(path).header
        shape = tuple(int(n) for n in header.get_data_shape())
        intent = int(header["intent_code"])
    except Exception:  # noqa: BLE001 - a reader's probe never raises
        return False
    return intent in (1006, 1007) or (len(shape) == 5 and shape[3] == 1 and shape[4] in (2, 3))
