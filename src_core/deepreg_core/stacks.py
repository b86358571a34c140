"""Images with one extra axis (time points or channels): split into frames, read and written.

A *stack* is a 2D or 3D image repeated along one more axis: the time points of a 2D+t / 3D+t
series, or the channels of a multi-channel image. In memory it is a list of
:class:`~deepreg_core.image.Image` frames on one grid; :func:`as_frames` builds that list from
a list of images, from an :class:`Image` or an array with the extra axis at ``axis``.

On disk (:func:`read_stack`, :func:`write_stack`) a stack is one NIfTI (3D/4D) or TIFF file;
``axis`` indexes its data array once axes of length 1 are dropped (a NIfTI ``(x, y, 1, t)`` is
``(x, y, t)``, time axis 2). Frames of a NIfTI keep the world geometry of their spatial axes;
a TIFF with time or channel axes keeps its ImageJ pixel size (else 1 per pixel). A corrected
stack is written back in the layout and header it was read with.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepreg_core.image import Image

__all__ = ["StackFile", "as_frames", "read_stack", "write_frames", "write_stack"]

# TIFF axis letters for the spatial axes (Q and I are tifffile's unnamed axes, as in io)
_TIFF_SPATIAL = "ZYXQI"


def _check_axis(axis: object, shape: tuple[int, ...], name: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(
            f"{name}: expected the index of the extra axis of an array of shape {shape} (an int "
            f"in [{-len(shape)}, {len(shape) - 1}]), got {axis!r}."
        )
    if not -len(shape) <= int(axis) < len(shape):
        raise ValueError(
            f"{name}: expected an axis in [{-len(shape)}, {len(shape) - 1}] for an array of "
            f"shape {shape}, got {axis}."
        )
    return int(axis) % len(shape)


def _drop_axis(affine: np.ndarray, axis: int) -> np.ndarray:
    """The voxel-to-world affine of the axes left when ``axis`` is removed (its row too)."""
    keep = [i for i in range(affine.shape[0]) if i != axis]
    sub = affine[np.ix_(keep, keep)].copy()
    if abs(np.linalg.det(sub[:-1, :-1])) < 1e-9:  # the dropped axis carried a world direction
        sub[:-1, :-1] = np.diag(np.linalg.norm(affine[:-1, :-1], axis=0)[keep[:-1]])
        sub[:-1, -1] = 0.0
    return sub


def as_frames(stack: Sequence[Image] | Image | np.ndarray, axis: int | None = None, *,
              spacing: Sequence[float] | None = None, name: str = "time_axis") -> list[Image]:
    """The frames of a stack, one :class:`Image` per index along the extra axis.

    Parameters
    ----------
    stack : list of Image, Image or ndarray
        Frames already split (all of one shape and affine; ``axis`` is then ignored), a 3D
        :class:`Image` holding a 2D+t / 2D+c stack, or an array ``(.., N, ..)`` of 3 or 4
        dimensions.
    axis : int
        Where the extra axis lies in ``stack`` (required for an array or an Image).
    spacing : sequence of float, optional
        Voxel size of a frame (array order) for an array input; default 1 per voxel.
    name : str
        The argument named in error messages (``"time_axis"``, ``"channel_axis"``).

    Returns
    -------
    list of Image
        ``N`` frames ``(H, W)`` or ``(D, H, W)``, on one grid.

    Examples
    --------
    >>> frames = as_frames(np.zeros((5, 32, 32), np.float32), axis=0)
    >>> len(frames), frames[0].shape
    (5, (32, 32))
    """
    if isinstance(stack, (list, tuple)):
        frames = list(stack)
        if not frames:
            raise ValueError(f"{name}: expected at least one frame, got an empty list.")
        for index, frame in enumerate(frames):
            if not isinstance(frame, Image):
                raise TypeError(f"frame {index}: expected an Image, got {type(frame).__name__}.")
            if frame.shape != frames[0].shape:
                raise ValueError(
                    f"frame {index}: expected every frame to have the shape of frame 0 "
                    f"{frames[0].shape}, got {frame.shape}."
                )
            if not np.allclose(frame.affine, frames[0].affine, atol=1e-6):
                raise ValueError(
                    f"frame {index}: expected every frame on the grid of frame 0 (same affine), "
                    f"got {frame.affine.tolist()} vs {frames[0].affine.tolist()}."
                )
        return frames
    if isinstance(stack, Image):
        data, affine = stack.data, stack.affine
    elif isinstance(stack, np.ndarray):
        data, affine = stack, None
    else:
        raise TypeError(
            f"expected a list of Image frames, an Image or a numpy array, got "
            f"{type(stack).__name__}."
        )
    if data.ndim not in (3, 4):
        raise ValueError(
            f"{name}: expected a 3D (2D + one axis) or 4D (3D + one axis) array, got shape "
            f"{data.shape}."
        )
    if axis is None:
        raise ValueError(
            f"{name}: expected the index of the extra axis of the array of shape {data.shape} "
            "(e.g. 0 for (T, H, W)), got None."
        )
    axis = _check_axis(axis, data.shape, name)
    if affine is None:
        spatial = [n for i, n in enumerate(data.shape) if i != axis]
        grid = Image.from_array(np.zeros((1,) * len(spatial)), spacing=spacing).affine
    else:
        grid = _drop_axis(affine, axis)
    return [Image(np.take(data, index, axis=axis), grid) for index in range(data.shape[axis])]


@dataclass(frozen=True, repr=False)
class StackFile:
    """A stack read from one file, with what it takes to write a corrected one back.

    Attributes
    ----------
    frames : list of Image
        One frame per index along ``axis``.
    axis : int
        The extra axis in the file's array (singleton axes dropped).
    shape : tuple of int
        The file's array shape, singleton axes dropped.
    kind : {"nifti", "tiff"}
    source : Path
    header : Any
        The NIfTI header and affine, or the TIFF axes and pixel size.
    """

    frames: list[Image]
    axis: int
    shape: tuple[int, ...]
    kind: str
    source: Path
    header: dict[str, Any]

    def __repr__(self) -> str:
        return (f"StackFile({self.source.name}, shape={self.shape}, axis={self.axis}, "
                f"{len(self.frames)} frames)")


def _check_bytes(path: Path, shape: Sequence[int]) -> None:
    from deepreg_core.io import max_image_bytes

    needed = int(np.prod(shape)) * 8  # as stored (at most 4 bytes) plus the float32 copy
    if needed > max_image_bytes():
        raise ValueError(
            f"{path}: a stack of shape {tuple(shape)} needs about {needed / 2**30:.1f} GiB to "
            f"read, more than the limit {max_image_bytes() / 2**30:.1f} GiB "
            "($DEEPREG_MAX_IMAGE_BYTES)."
        )


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import nibabel as nib

    try:
        img = nib.load(path, mmap=False)
        _check_bytes(path, img.shape)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (OSError, EOFError, nib.filebasedimages.ImageFileError) as error:
        raise ValueError(f"{path}: not a readable NIfTI file ({error}).") from None
    # voxel (i, j, k, t, ...) -> world: the spatial columns, none for the axes after the third
    columns = np.zeros((4, data.ndim + 1))
    columns[:, : min(3, data.ndim)] = img.affine[:, : min(3, data.ndim)]
    columns[:, -1] = img.affine[:, 3]
    return data, columns, {"header": img.header.copy(), "affine": img.affine.copy(),
                           "file_shape": data.shape}


def _read_tiff(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            _check_bytes(path, series.shape)
            data = series.asarray().astype(np.float32)
            axes = series.axes
            imagej = tif.imagej_metadata or {}
            page = tif.pages[0]
            size = {"Z": float(imagej.get("spacing", 1.0) or 1.0)}
            for letter in "XY":
                tag = page.tags.get(f"{letter}Resolution")
                if tif.is_imagej and tag is not None and tag.value[0] > 0 and tag.value[1] > 0:
                    size[letter] = tag.value[1] / tag.value[0]
    except (OSError, ValueError, tifffile.TiffFileError) as error:
        raise ValueError(f"{path}: not a readable TIFF file ({error}).") from None
    if "S" in axes:
        raise ValueError(f"{path}: expected grey frames, got colour samples (axes {axes!r}).")
    columns = np.zeros((data.ndim + 1, data.ndim + 1))
    for i, letter in enumerate(axes):
        columns[i, i] = size.get(letter, 1.0)
    columns[-1, -1] = 1.0
    return data, columns, {"axes": axes, "size": size, "file_shape": data.shape}


def read_stack(path: str | os.PathLike[str], axis: int, *,
               name: str = "time_axis") -> StackFile:
    """Read a NIfTI or TIFF stack and split it along ``axis`` (singleton axes dropped first).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Unknown suffix, unreadable file, a stack larger than ``$DEEPREG_MAX_IMAGE_BYTES``, not
        3D/4D once singleton axes are dropped, ``axis`` out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file. Expected a .nii, .nii.gz, .tif or .tiff.")
    lower = path.name.lower()
    if lower.endswith((".nii", ".nii.gz")):
        kind, (data, columns, header) = "nifti", _read_nifti(path)
    elif lower.endswith((".tif", ".tiff")):
        kind, (data, columns, header) = "tiff", _read_tiff(path)
    else:
        raise ValueError(f"{path}: expected a .nii, .nii.gz, .tif or .tiff stack.")
    keep = [i for i, n in enumerate(data.shape) if n > 1]
    squeezed = data.reshape([data.shape[i] for i in keep])
    if squeezed.ndim not in (3, 4):
        raise ValueError(
            f"{path}: expected a 2D or 3D image with one more axis (time or channels), got shape "
            f"{data.shape}."
        )
    index = _check_axis(axis, squeezed.shape, name)
    spatial = [keep[i] for i in range(len(keep)) if i != index]
    header["keep"] = keep
    affine = _frame_affine(columns, spatial) if kind == "nifti" else \
        np.diag([*np.diag(columns)[spatial], 1.0])
    frames = [Image(frame.data, affine, {"source": str(path)})
              for frame in as_frames(squeezed, index, name=name)]
    return StackFile(frames, index, squeezed.shape, kind, path, header)


def _frame_affine(columns: np.ndarray, spatial: list[int]) -> np.ndarray:
    """A NIfTI frame's affine from the file's voxel-to-world ``columns`` ``(4, ndim + 1)``.

    3D frames of a 4D file keep the full affine; 2D frames keep their in-plane part when it is
    invertible (as :func:`deepreg_core.io.read_image` does for slices), else only the spacing.
    """
    rows = len(spatial)
    norms = np.linalg.norm(columns[:3, spatial], axis=0)
    norms[norms == 0] = 1.0
    affine = np.eye(rows + 1)
    affine[:rows, :rows] = columns[:rows, spatial]
    affine[:rows, rows] = columns[:rows, -1]
    if abs(np.linalg.det(affine[:rows, :rows])) < 1e-6 * np.prod(norms):
        affine[:rows, :rows], affine[:rows, rows] = np.diag(norms), 0.0
    return affine


def write_stack(stack: StackFile, frames: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write ``frames`` ``(N, *frame.shape)`` in the layout and header ``stack`` was read with.

    ``N`` may be smaller than the stack's length (a stopped run keeps the frames it did).
    The file is written atomically; its suffix is the stack's kind (NIfTI or TIFF).
    """
    from deepreg_core._files import atomic_target

    path = Path(path)
    frames = np.asarray(frames, dtype=np.float32)
    expected = (len(stack.frames),) + stack.frames[0].shape
    if frames.ndim != len(expected) or frames.shape[1:] != expected[1:] or \
            not 1 <= frames.shape[0] <= expected[0]:
        raise ValueError(f"frames: expected shape (1..{expected[0]}, *{expected[1:]}), got "
                         f"{frames.shape}.")
    data = np.moveaxis(frames, 0, stack.axis)
    file_shape = list(stack.header["file_shape"])
    file_shape[stack.header["keep"][stack.axis]] = frames.shape[0]
    data = data.reshape(file_shape)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    with atomic_target(path, suffix) as temporary:
        if stack.kind == "nifti":
            import nibabel as nib

            header = stack.header["header"].copy()
            header.set_data_dtype(np.float32)
            header.set_slope_inter(None, None)
            nib.save(nib.Nifti1Image(data, stack.header["affine"], header=header), temporary)
        else:
            import tifffile

            size = stack.header["size"]
            try:
                tifffile.imwrite(temporary, data, imagej=True,
                                 resolution=(1.0 / size.get("X", 1.0), 1.0 / size.get("Y", 1.0)),
                                 metadata={"axes": stack.header["axes"],
                                           "spacing": size.get("Z", 1.0)})
            except ValueError:  # axes ImageJ cannot hold (e.g. unnamed ones): a plain TIFF
                tifffile.imwrite(temporary, data)
    return path


def write_frames(frames: np.ndarray, grid: Image, path: str | os.PathLike[str]) -> Path:
    """Write ``frames`` ``(N, *grid.shape)`` (channels of one image) on ``grid``, atomically.

    NIfTI: ``(x, y[, z], N)`` with ``grid``'s world affine (a 2D grid gets a singleton third
    axis), N on the fourth axis as a multi-channel NIfTI. TIFF (ImageJ): axes ``CYX`` or
    ``ZCYX`` with the grid's pixel size.
    """
    from deepreg_core._files import atomic_target

    path = Path(path)
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != grid.ndim + 1 or frames.shape[1:] != grid.shape:
        raise ValueError(f"frames: expected shape (N, *{grid.shape}), got {frames.shape}.")
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    with atomic_target(path, suffix) as temporary:
        if suffix.lower() in (".nii", ".nii.gz"):
            import nibabel as nib

            affine = np.array(grid.affine) if grid.ndim == 3 else np.eye(4)
            if grid.ndim == 2:
                affine[np.ix_([0, 1, 3], [0, 1, 3])] = grid.affine
            data = np.moveaxis(frames, 0, -1)
            data = data[:, :, None] if grid.ndim == 2 else data
            nib.save(nib.Nifti1Image(data, affine), temporary)
        else:
            import tifffile

            spacing = grid.spacing
            data = frames if grid.ndim == 2 else np.moveaxis(frames, 0, 1)
            tifffile.imwrite(temporary, data, imagej=True,
                             resolution=(1.0 / spacing[-1], 1.0 / spacing[-2]),
                             metadata={"axes": "CYX" if grid.ndim == 2 else "ZCYX",
                                       "spacing": spacing[0]})
    return path
