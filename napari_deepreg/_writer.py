"""napari writers: save an image or labels layer to NIfTI/TIFF with its physical geometry.

The geometry written is the layer's own voxel-to-world matrix (scale, translate, rotate, shear
and affine, exactly as napari shows it); the NIfTI header kept by the reader (or by a result
layer, which carries its fixed image's header) is reused, so a file read and saved again keeps
its codes and units. Writing goes through ``deepreg_core.io.write_image`` (atomic).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from napari_deepreg._layers import META_KEY, world_matrix


def _image_from_layer_data(data: Any, attributes: Mapping[str, Any], labels: bool):
    from deepreg_core.api import Image

    name = attributes.get("name", "layer")
    if attributes.get("multiscale", False):
        data = data[0]
    array = np.asarray(data)
    if attributes.get("rgb", False):
        raise ValueError(
            f"{name!r} is an RGB layer; NIfTI/TIFF writing here expects one channel. "
            "Save it with napari's builtin writer instead."
        )
    if array.ndim not in (2, 3):
        raise ValueError(
            f"{name!r}: expected a 2D or 3D layer to save, got shape {array.shape}."
        )
    ndim = array.ndim
    matrix = world_matrix(
        attributes.get("scale", np.ones(ndim)),
        attributes.get("translate", np.zeros(ndim)),
        attributes.get("rotate"),
        attributes.get("shear"),
        attributes.get("affine"),
    )
    if matrix.shape != (ndim + 1, ndim + 1):
        raise ValueError(
            f"{name!r}: its placement is {matrix.shape[0] - 1}D but its data is {ndim}D."
        )
    if labels and not np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.int32)
    meta = dict(attributes.get("metadata", {}).get(META_KEY, {}))
    return Image(array, matrix, meta)


def write_image(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Save one image layer (``.nii``, ``.nii.gz`` or ``.tif``) with its physical geometry.

    Parameters
    ----------
    path : str
        Target file; its suffix picks the format.
    data : array-like
        The layer's data, shape ``(H, W)`` or ``(D, H, W)``.
    attributes : dict
        The layer's state (napari passes ``scale``, ``translate``, ``rotate``, ``shear``,
        ``affine``, ``metadata``...).

    Returns
    -------
    list of str
        ``[path]`` once written.

    Examples
    --------
    >>> data = np.zeros((8, 8, 8), np.float32)
    >>> write_image("t1.nii.gz", data, {"scale": [2, 2, 2]})  # doctest: +SKIP
    ['t1.nii.gz']
    """
    from deepreg_core.api import write_image as core_write

    core_write(_image_from_layer_data(data, attributes, labels=False), path)
    return [str(path)]


def write_labels(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Save one labels layer like :func:`write_image`, keeping an integer dtype."""
    from deepreg_core.api import write_image as core_write

    core_write(_image_from_layer_data(data, attributes, labels=True), path)
    return [str(path)]
