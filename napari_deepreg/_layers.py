"""Pure helpers between napari layers and the core's :class:`~deepreg_core.image.Image`.

Geometry
--------
A layer's voxel-to-world matrix is napari's ``affine @ (rotate @ shear @ scale + translate)``.
A core ``Image`` holds the same thing as ``Image.affine``. Files opened by this plugin are placed
with ``scale=spacing, translate=origin`` when their direction is the identity (the common case,
which keeps napari's scale bar and dims sliders meaningful) and with the full ``affine`` otherwise
(oblique, flipped or permuted axes); either way the layer's world matrix equals the file's affine.

The NIfTI header and the source path travel in ``layer.metadata[META_KEY]`` so that a layer (or a
result in its space) saves back with the right header. Nothing here imports napari or torch at
module level: the reader uses these helpers too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from deepreg_core.api import Image

META_KEY = "deepreg_meta"
"""``layer.metadata`` key: the core ``Image.meta`` (NIfTI header, source path, unit)."""

AFFINE_KEY = "deepreg_affine"
"""``layer.metadata`` key: the voxel-to-world affine of the file the layer was read from."""

RESULT_KEY = "deepreg_result"
"""``layer.metadata`` key on output layers: ``{"role": ..., "source": <moving layer name>}``."""

FIELD_KEY = "deepreg_field_units"
"""``layer.metadata`` key on displacement-field layers: the units of the vectors (``"voxels"``)."""

FIELD_DATA_KEY = "deepreg_field"
"""``layer.metadata`` key: a displacement field ``(ndim, *spatial)`` in voxels, held by a layer
that shows its magnitude (what File -> Open makes of a displacement NIfTI: no vector axis, so no
stray dims slider)."""

LABEL_NAME_HINTS = ("label", "seg", "aseg", "parc", "mask", "atlas")
MAX_LABELS = 64  # integer images with at most this many distinct values are read as labels

LayerDataTuple = tuple[np.ndarray, dict[str, Any], str]


# ----------------------------------------------------------------------------- geometry
def world_matrix(
    scale: Sequence[float],
    translate: Sequence[float],
    rotate: np.ndarray | None = None,
    shear: np.ndarray | Sequence[float] | None = None,
    affine: np.ndarray | None = None,
) -> np.ndarray:
    """Voxel-to-world matrix of napari placement parameters, shape ``(ndim + 1, ndim + 1)``.

    Parameters
    ----------
    scale, translate : sequence of float
        One value per layer axis (world units per voxel, world offset).
    rotate, shear : array, optional
        As napari stores them (rotation matrix; upper-triangular shear values or matrix).
    affine : array, optional
        napari's extra ``(ndim + 1, ndim + 1)`` affine applied after the others.

    Returns
    -------
    np.ndarray
        ``affine @ (rotate @ shear @ diag(scale) + translate)`` as a homogeneous float64 matrix.

    Examples
    --------
    >>> world_matrix([2.0, 0.5], [10.0, 0.0]).tolist()
    [[2.0, 0.0, 10.0], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]]
    """
    from napari.utils.transforms import CompositeAffine

    scale = np.asarray(scale, dtype=np.float64)
    ndim = scale.size
    composite = CompositeAffine(
        scale=scale, translate=np.asarray(translate, dtype=np.float64), rotate=rotate,
        shear=shear, ndim=ndim,
    ).affine_matrix
    extra = np.eye(ndim + 1) if affine is None else np.asarray(affine, dtype=np.float64)
    return extra @ composite


def layer_world_matrix(layer: Any) -> np.ndarray:
    """The voxel-to-world matrix of a napari layer, shape ``(layer.ndim + 1,) * 2``."""
    return world_matrix(layer.scale, layer.translate, layer.rotate, layer.shear,
                        layer.affine.affine_matrix)


def is_axis_aligned(affine: np.ndarray, atol: float = 1e-6) -> bool:
    """Whether an affine's direction is the identity (only scale and translation)."""
    affine = np.asarray(affine, dtype=np.float64)
    linear = affine[:-1, :-1]
    diagonal = np.diag(linear)
    return bool(np.allclose(linear, np.diag(diagonal), atol=atol) and np.all(diagonal > 0))


def placement_from_affine(affine: np.ndarray) -> dict[str, Any]:
    """napari keyword arguments that place a layer with this voxel-to-world ``affine``.

    Axis-aligned affines give ``scale``/``translate``; any other gives ``affine`` (napari then
    shows the data through the full matrix).

    Examples
    --------
    >>> placement_from_affine(np.diag([2.0, 3.0, 1.0]))
    {'scale': [2.0, 3.0], 'translate': [0.0, 0.0]}
    """
    affine = np.asarray(affine, dtype=np.float64)
    if is_axis_aligned(affine):
        return {"scale": np.diag(affine)[:-1].tolist(), "translate": affine[:-1, -1].tolist()}
    return {"affine": affine}


def placement_like(layer: Any) -> dict[str, Any]:
    """napari keyword arguments that put a new layer exactly where ``layer`` is."""
    return {
        "scale": np.asarray(layer.scale).tolist(),
        "translate": np.asarray(layer.translate).tolist(),
        "rotate": np.asarray(layer.rotate),
        "shear": np.asarray(layer.shear),
        "affine": np.asarray(layer.affine.affine_matrix),
    }


# ----------------------------------------------------------------------------- Image <-> layer
def looks_like_labels(name: str, data: np.ndarray, *, count_values: bool = True) -> bool:
    """Whether integer ``data`` named ``name`` is a label map rather than intensities.

    True for integer (or boolean) data whose name contains a hint (``label``, ``seg``, ``aseg``,
    ...), or, with ``count_values``, that holds at most :data:`MAX_LABELS` distinct values.

    Examples
    --------
    >>> looks_like_labels("aseg", np.zeros((4, 4), np.int16))
    True
    >>> looks_like_labels("t1", np.arange(256, dtype=np.uint8).reshape(16, 16))
    False
    """
    if not (np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_):
        return False
    if any(hint in name.lower() for hint in LABEL_NAME_HINTS):
        return True
    if not count_values:
        return False
    flat = np.ravel(data)
    step = max(1, flat.size // 200_000)  # a strided sample first: most images fail fast
    if np.unique(flat[::step]).size > MAX_LABELS:
        return False
    return np.unique(flat).size <= MAX_LABELS


def layer_data_from_image(image: Image, name: str, layer_type: str = "image") -> LayerDataTuple:
    """A napari layer-data tuple that shows ``image`` in its physical space.

    The metadata keeps ``image.meta`` (header, source) and ``image.affine`` for writing back.
    """
    kwargs: dict[str, Any] = {"name": name, **placement_from_affine(image.affine)}
    kwargs["metadata"] = {META_KEY: dict(image.meta), AFFINE_KEY: np.array(image.affine)}
    return np.asarray(image.data), kwargs, layer_type


MAX_LAYER_VOXELS = 256**3
"""The most voxels copied from a multiscale or dask-backed layer: larger data is registered on
the finest pyramid level (or a block-averaged copy) under this size, and the user is told which."""


def _level_matrix(factors: np.ndarray) -> np.ndarray:
    """Level voxel -> level-0 voxel for a level ``factors`` times coarser (block centres)."""
    ndim = len(factors)
    matrix = np.eye(ndim + 1)
    matrix[:ndim, :ndim] = np.diag(factors)
    matrix[:ndim, ndim] = (factors - 1.0) / 2.0
    return matrix


def _large_data(layer: Any, role: str, max_voxels: int,
                labels: bool = False) -> tuple[Any, np.ndarray]:
    """The data to copy, and the level-to-level-0 voxel matrix (identity for level 0).

    A multiscale layer gives its finest level under ``max_voxels``; dask/zarr-backed data over
    it is block-averaged by the smallest power of 2 that fits (never read whole). Either way an
    info notification says which level was registered.
    """
    levels = list(layer.data) if getattr(layer, "multiscale", False) else [layer.data]
    spatial = int(layer.ndim)  # an RGB layer's colour axis is not spatial
    full = np.asarray(levels[0].shape[:spatial], dtype=np.float64)
    chosen = next((k for k, level in enumerate(levels)
                   if int(np.prod(level.shape[:spatial])) <= max_voxels), None)
    if chosen is not None and chosen == 0:
        return levels[0], np.eye(len(full) + 1)
    if chosen is not None:
        data = levels[chosen]
        note = f"pyramid level {chosen} of {len(levels)}"
    else:  # even the coarsest level is too large: average blocks of the coarsest level
        import dask.array as da

        base = levels[-1]
        factor = 2
        while int(np.prod(np.ceil(np.asarray(base.shape[:spatial]) / factor))) > max_voxels:
            factor *= 2
        lazy = base if isinstance(base, da.Array) else da.from_array(base)
        if labels:  # label values are not averaged: every factor-th voxel, offset to the centre
            data = lazy[tuple(slice(factor // 2, n - n % factor, factor)
                              for n in lazy.shape[:spatial])]
        else:
            data = da.coarsen(np.mean, lazy, {axis: factor for axis in range(spatial)},
                              trim_excess=True)
        note = f"level {len(levels) - 1} averaged in blocks of {factor}"
    factors = full / np.asarray(data.shape[:spatial], dtype=np.float64)
    from napari.utils import notifications

    notifications.show_info(
        f"{role}: {layer.name!r} has {int(np.prod(full)):,} voxels; registering {note}, shape "
        f"{tuple(int(n) for n in data.shape[:spatial])} ({' x '.join(f'{f:g}' for f in factors)} "
        "coarser). The result is on that grid."
    )
    return data, _level_matrix(factors)


def layer_to_image(layer: Any, role: str, *, kind: str = "image",
                   max_voxels: int = MAX_LAYER_VOXELS) -> Image:
    """Copy a napari layer into a core ``Image`` in the layer's physical space.

    Parameters
    ----------
    layer : napari.layers.Image or napari.layers.Labels or None
        The layer chosen for ``role``.
    role : str
        What the layer is for (``"fixed"``, ``"moving labels"``...), used in error messages.
    kind : {"image", "labels"}
        Which layer type is expected. Images are copied as float32 (RGB converted to grey with
        a notice); labels keep an integer dtype.
    max_voxels : int
        Multiscale and dask-backed layers larger than this are registered on a coarser level
        (:data:`MAX_LAYER_VOXELS`; an info notification says which).

    Returns
    -------
    Image
        A copy of the data (the layer is never modified) with the layer's world matrix as its
        affine and the layer's kept header (``metadata[META_KEY]``) as its meta.

    Raises
    ------
    ValueError
        No layer, an empty layer, not 2D/3D, or non-finite values.
    TypeError
        A layer of the wrong type.
    """
    from deepreg_core.api import Image

    expected = {"image": "Image", "labels": "Labels"}[kind]
    if layer is None:
        raise ValueError(f"{role}: no layer chosen. Pick a 2D or 3D {expected} layer.")
    if layer.__class__.__name__ != expected:
        raise TypeError(
            f"{role}: expected a napari {expected} layer, got {layer.__class__.__name__} layer "
            f"{layer.name!r}."
        )
    data, to_level0 = _large_data(layer, role, max_voxels, labels=kind == "labels")
    data = np.array(data, copy=True)  # a plain numpy copy, also of dask/zarr data
    meta = dict(layer.metadata.get(META_KEY, {}))
    if kind == "image" and getattr(layer, "rgb", False):
        from napari.utils import notifications

        data = _rgb_to_grey(data)
        meta["converted_from_rgb"] = True
        notifications.show_info(f"{role}: {layer.name!r} is RGB; it was converted to grey.")
    if data.size == 0:
        raise ValueError(f"{role}: layer {layer.name!r} is empty (shape {data.shape}).")
    if data.ndim not in (2, 3):
        raise ValueError(
            f"{role}: expected a 2D or 3D layer, got {layer.name!r} with shape {data.shape} "
            f"({data.ndim}D). Remove time/channel axes first (e.g. split channels)."
        )
    if kind == "image":
        data = data.astype(np.float32, copy=False)
        if not np.all(np.isfinite(data)):
            n_bad = int((~np.isfinite(data)).sum())
            raise ValueError(
                f"{role}: layer {layer.name!r} holds {n_bad} NaN or infinite value(s). "
                "Replace them (e.g. np.nan_to_num) before registering."
            )
    elif not np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.int32)
    affine = layer_world_matrix(layer) @ to_level0
    return Image(data, affine, meta)


def _rgb_to_grey(data: np.ndarray) -> np.ndarray:
    """Luminance (ITU-R BT.709) of ``(..., 3|4)`` colour data, alpha dropped."""
    rgb = np.asarray(data[..., :3], dtype=np.float32)
    return rgb @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


def points_to_voxels(points_layer: Any, image: Image, role: str) -> np.ndarray:
    """Voxel indices ``(N, ndim)`` in ``image`` of the points of a napari Points layer.

    Points go data -> world through the points layer's own placement, then world -> voxel
    through ``image.affine``.
    """
    if points_layer.__class__.__name__ != "Points":
        raise TypeError(
            f"{role}: expected a napari Points layer, got {points_layer.__class__.__name__}."
        )
    data = np.asarray(points_layer.data, dtype=np.float64)
    if data.shape[0] == 0:
        raise ValueError(f"{role}: layer {points_layer.name!r} holds no points.")
    if data.shape[1] != image.ndim:
        raise ValueError(
            f"{role}: expected {image.ndim}D points to match the {image.ndim}D image, got "
            f"{data.shape[1]}D points in {points_layer.name!r}."
        )
    matrix = layer_world_matrix(points_layer)
    world = data @ matrix[:-1, :-1].T + matrix[:-1, -1]
    return image.world_to_index(world)


def displayed_axes(viewer: Any, ndim: int) -> tuple[int, ...]:
    """The axes of an ``ndim``-D layer that the viewer shows on screen (2, or 3 in 3D view).

    A layer's axes are the last ``ndim`` world dimensions of the viewer.
    """
    dims = viewer.dims
    offset = dims.ndim - ndim
    axes = tuple(a - offset for a in dims.displayed if a >= offset)
    return axes if len(axes) >= 2 else tuple(range(ndim))[-2:]


def metadata_for(image: Image, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Layer metadata that lets an output layer save back with ``image``'s header."""
    metadata = {META_KEY: dict(image.meta), AFFINE_KEY: np.array(image.affine)}
    metadata.update(extra or {})
    return metadata
