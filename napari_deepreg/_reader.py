"""napari reader for NIfTI (``.nii``, ``.nii.gz``) and TIFF (``.tif``, ``.tiff``) images.

Images open in physical space (see :mod:`napari_deepreg._layers`): ``scale=spacing`` and
``translate=origin`` for axis-aligned files, the full ``affine`` for oblique ones. The header and
affine are kept in the layer's metadata so that results save back with them. Integer NIfTI
files that look like label maps (a name with ``label``/``seg``/``aseg``..., or few distinct values)
open as Labels layers.

Displacement fields (ITK/ANTs NIfTI, intent 1006/1007 or shape ``(X, Y, Z, 1, ndim)``) open as
a layer of their magnitude that holds the field for the Inspect widget (no stray dims slider for
the vector axis). When the plugin is activated (:func:`activate`, npe2's ``on_activate``), it
becomes napari's preferred reader for these suffixes unless the user chose another, so File ->
Open no longer asks "Choose reader" (the napari builtins cannot read NIfTI).

The reader never raises: anything it cannot read (4D series, vector fields, corrupt files) gives
``None`` so that napari can try another reader. Only numpy is imported at module level.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepreg_core import api
from napari_deepreg._layers import LayerDataTuple, layer_data_from_image, looks_like_labels

SUFFIXES = (".nii.gz", ".nii", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii.gz", ".nii")

PathLike = str | os.PathLike


def _single_path(path: PathLike | list[PathLike]) -> Path | None:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        return Path(path)
    except TypeError:
        return None


def _spatial_ndim(path: Path) -> int | None:
    """Number of spatial axes a file holds, from its header only (None when unreadable)."""
    name = path.name.lower()
    try:
        if name.endswith(NIFTI_SUFFIXES):
            import nibabel as nib

            shape = list(nib.load(path).shape)
        else:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape = [n for n, a in zip(series.shape, series.axes) if n > 1 or a in "YX"]
                if series.axes.endswith("S") and shape and shape[-1] in (3, 4):
                    shape = shape[:-1]  # colour samples become grey
    except Exception:  # noqa: BLE001 - a reader must never raise
        return None
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    if len(shape) == 3 and shape[2] == 1 and name.endswith(NIFTI_SUFFIXES):
        shape.pop()
    return len(shape)


ReaderFunction = Callable[[Any], list[LayerDataTuple] | None]


def get_reader(path: PathLike | list[PathLike]) -> ReaderFunction | None:
    """Return :func:`read_layers` when ``path`` is a 2D or 3D NIfTI/TIFF file, else None.

    Parameters
    ----------
    path : str, PathLike or list of one
        What napari asks about.

    Returns
    -------
    callable or None
        None for folders, several files, other suffixes, 4D/vector data or unreadable headers.

    Examples
    --------
    >>> get_reader("notes.txt") is None
    True
    """
    target = _single_path(path)
    if target is None or not target.name.lower().endswith(SUFFIXES) or not target.is_file():
        return None
    if target.name.lower().endswith(NIFTI_SUFFIXES):
        from napari_deepreg._fields import looks_like_field_file

        if looks_like_field_file(str(target)):
            return read_field_layers
    if _spatial_ndim(target) not in (2, 3):
        return None
    return read_layers


def read_layers(path: PathLike | list[PathLike]) -> list[LayerDataTuple] | None:
    """Read one NIfTI/TIFF file as a napari image or labels layer in physical space.

    Parameters
    ----------
    path : str, PathLike or list of one
        The file.

    Returns
    -------
    list of (data, kwargs, layer_type) or None
        One layer, named after the file; None when the file cannot be read as a 2D/3D image.
    """
    target = _single_path(path)
    if target is None:
        return None
    try:

        image = api.read_image(target)
    except Exception:  # noqa: BLE001 - a reader must never raise
        return None
    name = api.image_stem(target)
    is_nifti = target.name.lower().endswith(NIFTI_SUFFIXES)
    labels = looks_like_labels(name, image.data, count_values=is_nifti)
    return [layer_data_from_image(image, name, "labels" if labels else "image")]


def read_field_layers(path: PathLike | list[PathLike]) -> list[LayerDataTuple] | None:
    """Read a displacement NIfTI as a field layer (:func:`._fields.field_layer_data`)."""
    from napari_deepreg._fields import field_layer_data

    target = _single_path(path)
    if target is None:
        return None
    try:
        return [field_layer_data(str(target))]
    except Exception:  # noqa: BLE001 - a reader must never raise
        return None


PATTERNS = ("*.nii", "*.nii.gz", "*.tif", "*.tiff")


def prefer_this_reader(settings: Any = None) -> list[str]:
    """Make this plugin napari's reader for :data:`PATTERNS` the user has no preference for.

    Returns the patterns set. A preference the user chose (another plugin) is kept.
    """
    if settings is None:
        from napari.settings import get_settings

        settings = get_settings()
    current = dict(settings.plugins.extension2reader)
    added = [p for p in PATTERNS if p not in current]
    if added:
        current.update({p: "napari-deepreg" for p in added})
        settings.plugins.extension2reader = current
    return added


def activate(_context: Any = None) -> None:
    """npe2 ``on_activate``: the first time any contribution is used (widget, sample, reader)."""
    try:
        prefer_this_reader()
    except Exception:  # noqa: BLE001 - settings that cannot be written never break the plugin
        pass
