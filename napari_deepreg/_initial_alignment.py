"""Manual initial alignment: the moving layer's own napari transform as the starting point.

A layer's voxel-to-world matrix (``_layers.layer_world_matrix``) holds everything the user set in
the layer controls or with napari's transform mode: scale, translate, rotate, shear, affine. The
**base** placement is where the layer was before the user moved it: its file's affine (layers
read by this plugin keep it in ``metadata[AFFINE_KEY]``), else the placement it had when the
Register widget first saw it (kept in ``metadata[BASE_KEY]``). The **initial transform** is the
world → world matrix ``W_now @ inv(W_base)``; registering the moving image with its current world
matrix starts from it, because the core places each image in physical space by its affine.

The 3D nudge panel writes a rigid-plus-scale matrix ``N`` about the image's centre into the
layer's ``affine`` (``N @ A_base``), so the nudge and the layer controls feed the same transform.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_deepreg import _layers

BASE_KEY = "deepreg_base_placement"
"""``layer.metadata`` key: the napari placement a moving layer had before the user moved it."""


def remember_base(layer: Any) -> None:
    """Keep ``layer``'s placement as its base unless it has one (or a file affine)."""
    if BASE_KEY not in layer.metadata and _layers.AFFINE_KEY not in layer.metadata:
        layer.metadata[BASE_KEY] = _layers.placement_like(layer)


def base_placement(layer: Any) -> dict[str, Any]:
    """napari keyword arguments of ``layer``'s base placement (complete: every parameter)."""
    ndim = layer.ndim
    placement: dict[str, Any] = {"scale": [1.0] * ndim, "translate": [0.0] * ndim,
                                 "rotate": np.eye(ndim), "shear": np.zeros(ndim * (ndim - 1) // 2),
                                 "affine": np.eye(ndim + 1)}
    if _layers.AFFINE_KEY in layer.metadata:
        placement.update(_layers.placement_from_affine(layer.metadata[_layers.AFFINE_KEY]))
    else:
        placement.update(layer.metadata.get(BASE_KEY, _layers.placement_like(layer)))
    return placement


def base_matrix(layer: Any) -> np.ndarray:
    """The base voxel-to-world matrix of ``layer``, shape ``(ndim + 1, ndim + 1)``."""
    p = base_placement(layer)
    return _layers.world_matrix(p["scale"], p["translate"], p["rotate"], p["shear"], p["affine"])


def initial_transform(layer: Any) -> np.ndarray:
    """The user's transform of ``layer``, world → world: ``W_now @ inv(W_base)``."""
    return _layers.layer_world_matrix(layer) @ np.linalg.inv(base_matrix(layer))


def reset(layer: Any) -> None:
    """Put ``layer`` back at its base placement (undo the manual alignment)."""
    for name, value in base_placement(layer).items():
        setattr(layer, name, value)


def nudge_matrix(translate: Any, degrees: Any, scale: float, centre: Any) -> np.ndarray:
    """A world → world matrix: scale and rotate about ``centre``, then translate.

    ``degrees`` are rotations about the first, second and third world axes (array order), in
    that order (in 2D: one in-plane angle); ``translate`` is in world units.

    >>> m = nudge_matrix([1, 2, 3], [0, 0, 0], 1.0, [5, 5, 5])
    >>> m[:3, 3].tolist()
    [1.0, 2.0, 3.0]
    """
    ndim = len(centre)
    linear = np.eye(ndim) * float(scale)
    angles = np.radians(np.asarray(degrees, dtype=np.float64))
    planes = [(0, 1)] if ndim == 2 else [(1, 2), (0, 2), (0, 1)]  # about no axis / each axis
    for (a, b), angle in zip(planes, angles):
        rotation = np.eye(ndim)
        c, s = np.cos(angle), np.sin(angle)
        rotation[a, a], rotation[a, b], rotation[b, a], rotation[b, b] = c, -s, s, c
        linear = rotation @ linear
    centre = np.asarray(centre, dtype=np.float64)
    matrix = np.eye(ndim + 1)
    matrix[:ndim, :ndim] = linear
    matrix[:ndim, ndim] = centre - linear @ centre + np.asarray(translate, dtype=np.float64)
    return matrix


def centre_of(layer: Any) -> np.ndarray:
    """The world position of the centre of ``layer``'s data at its base placement."""
    shape = np.asarray(layer.data.shape[-layer.ndim:], dtype=np.float64)
    matrix = base_matrix(layer)
    return matrix[:-1, :-1] @ ((shape - 1) / 2) + matrix[:-1, -1]


def apply_nudge(layer: Any, nudge: np.ndarray) -> None:
    """Set ``layer.affine`` to ``nudge @ A_base`` (the other parameters stay the user's)."""
    layer.affine = nudge @ np.asarray(base_placement(layer)["affine"], dtype=np.float64)


def describe(matrix: np.ndarray) -> str:
    """A one-line summary of a world → world matrix: translation, rotation, scale.

    >>> describe(np.eye(3))
    'identity (the layer is where it was)'
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if np.allclose(matrix, np.eye(len(matrix)), atol=1e-9):
        return "identity (the layer is where it was)"
    ndim = len(matrix) - 1
    linear, shift = matrix[:ndim, :ndim], matrix[:ndim, ndim]
    u, singular, vt = np.linalg.svd(linear)
    rotation = u @ vt
    angle = np.degrees(np.arccos(np.clip((np.trace(rotation) - (ndim - 2)) / 2, -1.0, 1.0)))
    translate = ", ".join(f"{v:.2f}" for v in shift)
    scales = ", ".join(f"{v:.3f}" for v in singular)
    return f"translate ({translate}), rotate {angle:.1f}°, scale ({scales})"
