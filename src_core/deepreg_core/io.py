"""Read and write images as :class:`~deepreg_core.image.Image` (NIfTI, TIFF, PNG).

- NIfTI (``.nii``, ``.nii.gz``, nibabel): the data array as stored, ``(i, j, k)``; the affine is
  nibabel's best affine (sform, else qform) in RAS+ mm; the header is kept in
  ``meta["nifti_header"]`` so results save back with the same codes and units.
- TIFF (``.tif``, ``.tiff``, tifffile): 2D or 3D; spacing from ImageJ metadata (resolution tags
  and ``spacing``) or OME physical sizes, else 1.0; the world is ``diag(spacing)`` in array order.
- PNG (``.png``, scikit-image): 2D, spacing 1.

RGB/RGBA images become grey (luminance, ``skimage.color.rgb2gray``) with
``meta["converted_from_rgb"] = True``, or are refused with ``rgb="refuse"``. Integer data on disk
stays integer (labels); other data is cast to ``dtype``; complex data is refused. Every write is
atomic: the file is written next to its target under a temporary name and moved into place with
``os.replace``.

Reading is bounded: the size a file declares (its shape and dtype, read from the header) is
compared with :func:`max_image_bytes` (``$DEEPREG_MAX_IMAGE_BYTES``, default 4 GiB) and with the
memory available *before* any voxel is allocated, and a file whose data is shorter than it
declares (a lying header, a truncated or decompression-bomb ``.gz``) is refused after a streamed
check that stores nothing. Every failure is a ``ValueError`` that names the file.
"""

from __future__ import annotations

import gzip
import os
import warnings
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import tifffile

from deepreg_core._files import atomic_target
from deepreg_core.image import Image

__all__ = ["MAX_IMAGE_BYTES_ENV", "SUPPORTED_SUFFIXES", "max_image_bytes", "read_image",
           "write_image"]

SUPPORTED_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz", ".tif", ".tiff", ".png")

_FORMATS = {".nii": "nifti", ".nii.gz": "nifti", ".tif": "tiff", ".tiff": "tiff", ".png": "png"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Errors a reader raises on a truncated, corrupt or mislabelled file.
_READ_ERRORS = (
    OSError,
    ValueError,
    TypeError,
    EOFError,
    KeyError,
    IndexError,
    OverflowError,
    zlib.error,
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
    nib.spatialimages.ImageDataError,
)
MAX_IMAGE_BYTES_ENV = "DEEPREG_MAX_IMAGE_BYTES"
DEFAULT_MAX_IMAGE_BYTES = 4 << 30
# Below this many declared bytes a lying header costs little: the reader's own error suffices.
_STREAM_CHECK_BYTES = 64 << 20


# ----------------------------------------------------------------------------- helpers
def _suffix(path: Path) -> str:
    """Return the supported suffix of ``path`` (lower case), or raise ValueError."""
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    got = "".join(path.suffixes) or "no suffix"
    raise ValueError(
        f"{path}: expected a file ending in one of {', '.join(SUPPORTED_SUFFIXES)}, got "
        f"{got!r}. Convert the image to NIfTI (.nii.gz) or TIFF (.tif) first."
    )


def _unreadable(path: Path, kind: str, error: Exception) -> ValueError:
    reason = " ".join(str(error).split())[:300]  # one line, bounded: never the file's content
    return ValueError(
        f"{path}: expected a readable {kind} file, but reading failed with "
        f"{type(error).__name__}: {reason}. The file may be truncated, corrupt or not {kind} "
        "despite its suffix."
    )


def max_image_bytes() -> int:
    """The largest image :func:`read_image` accepts, in bytes as held in memory while reading.

    ``$DEEPREG_MAX_IMAGE_BYTES`` (an integer, bytes) when set, else 4 GiB.
    """
    raw = os.environ.get(MAX_IMAGE_BYTES_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_IMAGE_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(
            f"{MAX_IMAGE_BYTES_ENV}: expected a positive integer number of bytes, got a value "
            f"of {len(raw)} characters that is not one."
        )
    return value


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB"


def _check_size(path: Path, shape: tuple[int, ...], dtype: np.dtype, max_bytes: int) -> int:
    """Refuse an image whose declared size would not fit; return its stored data bytes.

    Reading holds the data as stored plus its float32 copy, so that is what is compared.
    """
    voxels = 1
    for n in shape:
        voxels *= max(int(n), 0)
    stored = voxels * dtype.itemsize
    needed = stored + voxels * 4
    if needed > max_bytes:
        raise ValueError(
            f"{path}: the file declares {' x '.join(map(str, shape))} voxels of {dtype} "
            f"({_gib(needed)} to read), above the limit of {_gib(max_bytes)}. Crop or "
            f"downsample it, or raise the limit ({MAX_IMAGE_BYTES_ENV}, bytes)."
        )
    available = _available_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"{path}: the file declares {' x '.join(map(str, shape))} voxels of {dtype} "
            f"({_gib(needed)} to read), but only {_gib(available)} of memory is available."
        )
    return stored


def _check_data_length(path: Path, opener, offset: int, stored: int) -> None:
    """Refuse a file holding fewer than ``offset + stored`` bytes of (decompressed) data.

    Large declared sizes only, and streamed: at most 1 MiB is held at a time and reading stops
    as soon as the declared length is reached, so a decompression bomb is never expanded.
    """
    if stored < _STREAM_CHECK_BYTES:
        return
    wanted, seen = offset + stored, 0
    with opener(path, "rb") as stream:
        while seen < wanted:
            chunk = stream.read(min(1 << 20, wanted - seen))
            if not chunk:
                break
            seen += len(chunk)
    if seen < wanted:
        raise ValueError(
            f"{path}: the header declares {_gib(stored)} of voxel data, but the file holds only "
            f"{_gib(max(seen - offset, 0))}. The file is truncated or its header is wrong."
        )


def _out_of_memory(path: Path, shape: tuple[int, ...], dtype: object) -> ValueError:
    return ValueError(
        f"{path}: not enough memory to read {' x '.join(map(str, shape))} voxels of {dtype}. "
        "Crop or downsample the image, or free memory."
    )


def _to_grey(data: np.ndarray, path: Path, rgb: str) -> np.ndarray:
    """Convert ``(..., 3|4)`` colour data to luminance in [0, 1], or refuse."""
    if rgb == "refuse":
        raise ValueError(
            f"{path}: expected a single-channel (grey) image, got colour data of shape "
            f"{data.shape} (last axis = {data.shape[-1]} channels) and rgb='refuse'. "
            "Pass rgb='grey' to convert it to luminance, or save one channel."
        )
    from skimage.color import rgb2gray  # heavy import, only when needed

    return rgb2gray(data[..., :3])  # alpha is dropped, not blended


def _finish_dtype(data: np.ndarray, labels: bool | None, dtype: np.dtype, path: Path) -> np.ndarray:
    """Apply the label / dtype policy to freshly read data (native byte order)."""
    if data.dtype.kind not in "biuf":
        what = "complex" if data.dtype.kind == "c" else "non-scalar"
        raise ValueError(
            f"{path}: expected real-valued voxels, got {what} data (dtype {data.dtype}). "
            "Save the magnitude (or one component) as its own real-valued image first."
        )
    data = data.astype(data.dtype.newbyteorder("="), copy=False)
    is_integer = np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_
    if labels is False or (labels is None and not is_integer):
        return data.astype(dtype, copy=False)
    if is_integer:
        return data
    # labels=True on floating data: accept integral values only.
    if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
        raise ValueError(
            f"{path}: labels=True expects integer label values, got non-integer values "
            f"(dtype {data.dtype}, e.g. {data[data != np.round(data)][:3].tolist()}). "
            "Read it with labels=False (intensities) instead."
        )
    big = max(abs(float(data.min())), abs(float(data.max()))) > 2**31 - 1
    return data.astype(np.int64 if big else np.int32)


# ----------------------------------------------------------------------------- NIfTI
def slice_affine(affine_3d: np.ndarray) -> np.ndarray:
    """The in-plane part of a NIfTI affine for a slice with a singleton third axis."""
    affine = affine_3d[np.ix_([0, 1, 3], [0, 1, 3])].copy()
    in_plane = np.linalg.norm(affine_3d[:3, :2], axis=0)
    if abs(np.linalg.det(affine[:2, :2])) < 1e-6 * np.prod(in_plane):
        # The slice is not in the world x-y plane (e.g. coronal): keep spacing, drop direction.
        affine[:2, :2] = np.diag(in_plane)
    return affine


def _read_nifti(path: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    try:
        img = nib.load(path, mmap=False)
        shape = img.shape
        stored_dtype = img.header.get_data_dtype()
        offset = int(img.header.get_data_offset())
    except _READ_ERRORS as error:
        raise _unreadable(path, "NIfTI", error) from error
    stored = _check_size(path, shape, stored_dtype, max_bytes)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        _check_data_length(path, opener, offset, stored)
    except (OSError, EOFError, zlib.error) as error:
        raise _unreadable(path, "NIfTI", error) from error
    spatial = list(shape)
    while len(spatial) > 3 and spatial[-1] == 1:
        spatial.pop()
    if len(spatial) > 3:
        raise ValueError(
            f"{path}: expected a 2D or 3D image, got a {len(shape)}D NIfTI of shape {shape} "
            "(a time series or vector/multi-channel field). Extract one volume first, e.g. with "
            "nibabel: img.slicer[..., 0], then save that."
        )
    if len(spatial) < 2:
        raise ValueError(f"{path}: expected a 2D or 3D image, got a NIfTI of shape {shape}.")
    try:
        data = np.asarray(img.dataobj).reshape(spatial)
    except MemoryError:
        raise _out_of_memory(path, shape, stored_dtype) from None
    except _READ_ERRORS as error:
        raise _unreadable(path, "NIfTI", error) from error
    affine = np.asarray(img.affine, dtype=np.float64)
    meta: dict[str, Any] = {"nifti_header": img.header.copy(), "unit": "mm"}
    if len(spatial) == 3 and spatial[2] == 1:
        data = data[:, :, 0]
        spatial = spatial[:2]
    if len(spatial) == 2:
        meta["nifti_affine_3d"] = affine
        affine = slice_affine(affine)
    return data, affine, meta


def _nifti_affine_4x4(image: Image, meta: dict[str, Any]) -> np.ndarray:
    if image.ndim == 3:
        return np.array(image.affine)
    stored = meta.get("nifti_affine_3d")
    if stored is not None and np.allclose(slice_affine(np.asarray(stored)), image.affine):
        return np.asarray(stored, dtype=np.float64)  # the original slice geometry
    affine = np.eye(4)
    affine[np.ix_([0, 1, 3], [0, 1, 3])] = image.affine
    return affine


def _write_nifti(image: Image, target: Path, source_meta: dict[str, Any]) -> None:
    header = source_meta.get("nifti_header")
    header = nib.Nifti1Header() if header is None else nib.Nifti1Header.from_header(header)
    affine = _nifti_affine_4x4(image, source_meta)
    data = image.data[:, :, None] if image.ndim == 2 else image.data
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    elif data.dtype == np.float16:
        data = data.astype(np.float32)
    elif data.dtype in (np.int64, np.uint64) and data.min() >= -(2**31) and data.max() < 2**31:
        data = data.astype(np.int32)  # int64 NIfTI is poorly supported by other tools
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(None, None)
    header.set_intent("none")
    header["cal_min"], header["cal_max"] = 0, 0
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code == 0 and qform_code == 0:
        sform_code = qform_code = 2  # aligned
    _, t_unit = header.get_xyzt_units()
    nifti = nib.Nifti1Image(data, affine, header=header)
    nifti.set_qform(affine, code=qform_code)
    linear = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    if sform_code == 0 and not np.allclose(linear.T @ linear, np.eye(3), atol=1e-6):
        sform_code = 2  # the qform cannot hold shears: the sform must carry the affine
    nifti.set_sform(affine, code=sform_code)
    nifti.header.set_xyzt_units(xyz="mm", t=t_unit)
    nib.save(nifti, target)


# ----------------------------------------------------------------------------- TIFF
def _ome_spacing(xml: str) -> tuple[dict[str, float], str | None]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}, None
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return {}, None
    sizes = {
        axis: float(pixels.attrib[f"PhysicalSize{axis}"])
        for axis in "XYZ"
        if f"PhysicalSize{axis}" in pixels.attrib
    }
    return sizes, pixels.attrib.get("PhysicalSizeXUnit", "µm")


def _tiff_spacing(tif: tifffile.TiffFile) -> tuple[dict[str, float], str | None]:
    """Physical voxel size per axis letter ('X', 'Y', 'Z') and its unit, when stored."""
    if tif.is_ome and tif.ome_metadata:
        sizes, unit = _ome_spacing(tif.ome_metadata)
        if sizes:
            return sizes, unit
    page = tif.pages[0]
    resolution_unit = int(page.tags["ResolutionUnit"].value) if "ResolutionUnit" in page.tags else 2
    imagej = tif.imagej_metadata or {}
    if tif.is_imagej:
        unit = imagej.get("unit")
    else:  # plain TIFF: trust only metric units (an inch unit is usually a screen dpi)
        unit = {3: "cm", 4: "mm", 5: "µm"}.get(resolution_unit)
        if unit is None:
            return {}, None
    sizes: dict[str, float] = {}
    for axis in "XY":
        tag = page.tags.get(f"{axis}Resolution")
        if tag is not None:
            numerator, denominator = tag.value
            if numerator > 0 and denominator > 0:
                sizes[axis] = denominator / numerator  # pixels per unit -> unit per pixel
    if "spacing" in imagej and float(imagej["spacing"]) > 0:
        sizes["Z"] = float(imagej["spacing"])
    return sizes, unit


def _read_tiff(path: Path, rgb: str, max_bytes: int) -> tuple[np.ndarray, np.ndarray, dict]:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            _check_size(path, tuple(series.shape), np.dtype(series.dtype), max_bytes)
            try:
                data = series.asarray()
            except MemoryError:
                raise _out_of_memory(path, tuple(series.shape), series.dtype) from None
            axes = series.axes
            photometric_rgb = tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
            sizes, unit = _tiff_spacing(tif)
    except _READ_ERRORS as error:
        raise _unreadable(path, "TIFF", error) from error
    shape = data.shape
    keep = [i for i, a in enumerate(axes) if data.shape[i] > 1 or a in "YXS"]
    data = data.reshape([shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    meta: dict[str, Any] = {"unit": unit}
    if photometric_rgb and axes.endswith("S") and data.shape[-1] in (3, 4):
        data = _to_grey(data, path, rgb)
        axes = axes[:-1]
        meta["converted_from_rgb"] = True
    blocked = [a for a in axes if a in "CTS"]
    if blocked or len(axes) not in (2, 3):
        raise ValueError(
            f"{path}: expected a 2D or 3D single-channel image, got a TIFF of shape {shape} with "
            f"axes {series.axes!r} (C = channels, T = time, S = samples, Q/I = unnamed). "
            "Save one channel / time point as its own 2D or 3D TIFF (e.g. in Fiji: "
            "Image > Color > Split Channels)."
        )
    spacing = [1.0] * len(axes)
    for i, letter in enumerate(axes):
        axis = "Z" if letter in "ZQI" else letter
        spacing[i] = sizes.get(axis, 1.0)
    affine = np.diag([*spacing, 1.0])
    return data, affine, meta


def _write_tiff(image: Image, target: Path) -> None:
    data = image.data
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    elif data.dtype not in (np.uint8, np.uint16, np.float32):  # ImageJ's dtypes
        fitted = _fit_integer(data, np.uint16) if np.issubdtype(data.dtype, np.integer) else None
        data = data.astype(np.float32) if fitted is None else fitted
    spacing = image.spacing
    if not np.allclose(image.direction, np.eye(image.ndim)) or np.any(image.origin != 0):
        warnings.warn(
            f"{target.name}: TIFF stores only the spacing; the origin {image.origin.tolist()} and "
            "direction of this image are not saved. Use .nii.gz to keep the full affine.",
            stacklevel=3,
        )
    metadata: dict[str, Any] = {"axes": "ZYX" if image.ndim == 3 else "YX"}
    if image.ndim == 3:
        metadata["spacing"] = spacing[0]
    unit = image.meta.get("unit")
    if unit:
        metadata["unit"] = unit
    tifffile.imwrite(
        target, data, imagej=True, resolution=(1.0 / spacing[-1], 1.0 / spacing[-2]),
        metadata=metadata,
    )


# ----------------------------------------------------------------------------- PNG
def _read_png(path: Path, rgb: str, max_bytes: int) -> tuple[np.ndarray, np.ndarray, dict]:
    import skimage.io

    try:
        with open(path, "rb") as stream:
            head = stream.read(26)  # signature, IHDR length and type, width, height, depth
        if head[:8] != _PNG_SIGNATURE:
            raise ValueError(f"the file does not start with the PNG signature (got {head[:8]!r})")
        if len(head) < 26:
            raise ValueError("the file ends inside the PNG header")
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        depth = np.dtype(np.uint16 if head[24] == 16 else np.uint8)
        _check_size(path, (height, width, 4), depth, max_bytes)  # at most 4 channels
        try:
            data = np.asarray(skimage.io.imread(path))
        except MemoryError:
            raise _out_of_memory(path, (height, width), depth) from None
    except _READ_ERRORS as error:
        raise _unreadable(path, "PNG", error) from error
    meta: dict[str, Any] = {"unit": None}
    if data.ndim == 3 and data.shape[-1] == 2:  # grey + alpha
        data = data[..., 0]
    elif data.ndim == 3 and data.shape[-1] in (3, 4):
        data = _to_grey(data, path, rgb)
        meta["converted_from_rgb"] = True
    if data.ndim != 2:
        raise ValueError(f"{path}: expected a 2D PNG (grey or RGB), got shape {data.shape}.")
    return data, np.eye(3), meta


def _fit_integer(data: np.ndarray, dtype: type[np.integer]) -> np.ndarray | None:
    """``data`` cast to ``dtype`` when every value is an integer within its range, else None."""
    info = np.iinfo(dtype)
    if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
        return None
    if data.min() < info.min or data.max() > info.max:
        return None
    return data.astype(dtype)


def _write_png(image: Image, target: Path) -> None:
    import skimage.io

    if image.ndim != 2:
        raise ValueError(
            f"{target}: PNG holds 2D images only, got a 3D image of shape {image.shape}. "
            "Save it as .tif or .nii.gz."
        )
    data = image.data
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if data.dtype not in (np.uint8, np.uint16):
        fitted = _fit_integer(data, np.uint8)
        if fitted is None and np.issubdtype(data.dtype, np.integer):
            fitted = _fit_integer(data, np.uint16)
        if fitted is None:
            raise ValueError(
                f"{target}: PNG stores uint8/uint16 integers, got dtype {data.dtype} with values "
                f"in [{float(np.nanmin(data)):.4g}, {float(np.nanmax(data)):.4g}] that do not fit "
                "uint8 without loss. Save it as .tif or .nii.gz to keep the values."
            )
        data = fitted
    skimage.io.imsave(target, data, check_contrast=False)


# ----------------------------------------------------------------------------- public
def read_image(
    path: str | os.PathLike[str],
    *,
    rgb: Literal["grey", "refuse"] = "grey",
    dtype: np.dtype | type = np.float32,
    labels: bool | None = None,
    max_bytes: int | None = None,
) -> Image:
    """Read a NIfTI, TIFF or PNG file as an :class:`Image`.

    Parameters
    ----------
    path : str or PathLike
        File ending in one of :data:`SUPPORTED_SUFFIXES`.
    rgb : {"grey", "refuse"}
        Colour (RGB/RGBA) images: convert to luminance in [0, 1] (alpha dropped) and set
        ``meta["converted_from_rgb"] = True``, or raise ValueError.
    dtype : numpy floating dtype
        dtype of non-integer data (and of all data when ``labels=False``).
    labels : bool or None
        ``None``: integer data on disk stays integer, other data becomes ``dtype``.
        ``True``: return integers (floating data must hold integral values).
        ``False``: always return ``dtype``.
    max_bytes : int, optional
        Refuse images needing more memory than this to read (the data as stored plus a float32
        copy), checked from the header before anything is allocated. Default:
        :func:`max_image_bytes`. The memory available is always a limit too.

    Returns
    -------
    Image
        Data shape ``(H, W)`` or ``(D, H, W)`` in the file's array order; affine in world units
        (mm for NIfTI; ``meta["unit"]`` for TIFF). ``meta`` holds ``"source"``, ``"format"`` and,
        for NIfTI, ``"nifti_header"``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Unknown suffix; corrupt, truncated or lying file; complex data; an image larger than
        ``max_bytes`` or than the memory available; 4D/multi-channel data; colour with
        ``rgb="refuse"``.

    Examples
    --------
    >>> img = read_image("brain.nii.gz")  # doctest: +SKIP
    >>> img.shape, img.spacing  # doctest: +SKIP
    ((182, 218, 182), (1.0, 1.0, 1.0))
    """
    path = Path(path)
    if rgb not in ("grey", "refuse"):
        raise ValueError(f"rgb: expected 'grey' or 'refuse', got {rgb!r}.")
    if labels not in (None, True, False):
        raise TypeError(f"labels: expected None, True or False, got {labels!r}.")
    float_dtype = np.dtype(dtype)
    if float_dtype.kind != "f":
        raise TypeError(
            f"dtype: expected a floating dtype (e.g. np.float32), got {float_dtype}. "
            "Use labels=True to read integer label images."
        )
    if max_bytes is None:
        max_bytes = max_image_bytes()
    elif isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes: expected a positive integer (bytes), got {max_bytes!r}.")
    suffix = _suffix(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such file. Expected an existing {', '.join(SUPPORTED_SUFFIXES)} file."
        )
    if path.is_dir():
        raise ValueError(f"{path}: expected a file, got a folder.")
    kind = _FORMATS[suffix]
    if kind == "nifti":
        level = nib.imageglobals.logger.level
        nib.imageglobals.logger.setLevel("CRITICAL")  # header fixes: not the user's concern
        try:
            data, affine, meta = _read_nifti(path, max_bytes)
        finally:
            nib.imageglobals.logger.setLevel(level)
    elif kind == "tiff":
        data, affine, meta = _read_tiff(path, rgb, max_bytes)
    else:
        data, affine, meta = _read_png(path, rgb, max_bytes)
    meta.update(source=str(path), format=kind)
    return Image(_finish_dtype(data, labels, float_dtype, path), affine, meta)


def write_image(
    image: Image, path: str | os.PathLike[str], *, reference: Image | None = None
) -> None:
    """Write an :class:`Image` to NIfTI, TIFF or PNG, atomically.

    Parameters
    ----------
    image : Image
        The image to save; its affine is the geometry written.
    path : str or PathLike
        Target file ending in one of :data:`SUPPORTED_SUFFIXES`; its folder must exist. An
        existing file is replaced only once the new one is complete.
    reference : Image, optional
        Image whose NIfTI header (qform/sform codes, description) is reused, e.g. the fixed
        image when saving a warped moving image. Default: ``image.meta``'s header.

    Notes
    -----
    - NIfTI: the header comes from ``reference`` or ``image.meta["nifti_header"]`` (else a new
      one); its qform/sform codes are kept, units set to mm, dtype set from the data.
    - TIFF: ImageJ format (uint8, uint16 or float32) with resolution and z ``spacing``; origin and
      direction are not stored (a warning says so when they are not trivial).
    - PNG: 2D uint8/uint16 only; other data must hold integers that fit, else ValueError.

    Examples
    --------
    >>> import numpy as np
    >>> img = Image.from_array(np.zeros((8, 8, 8), np.float32), spacing=(2.0, 1.0, 1.0))
    >>> write_image(img, "out.nii.gz")  # doctest: +SKIP
    """
    if not isinstance(image, Image):
        raise TypeError(
            f"image: expected a deepreg_core.image.Image, got {type(image).__name__}. "
            "Wrap arrays with Image.from_array(data, spacing=...)."
        )
    if reference is not None and not isinstance(reference, Image):
        raise TypeError(f"reference: expected an Image or None, got {type(reference).__name__}.")
    path = Path(path)
    suffix = _suffix(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"{path}: the folder {path.parent} does not exist. Create it first."
        )
    if path.is_dir():
        raise ValueError(f"{path}: expected a file path, got a folder.")
    kind = _FORMATS[suffix]
    with atomic_target(path, suffix) as temporary:
        if kind == "nifti":
            source_meta = dict(image.meta)
            if reference is not None and "nifti_header" in reference.meta:
                source_meta["nifti_header"] = reference.meta["nifti_header"]
            _write_nifti(image, temporary, source_meta)
        elif kind == "tiff":
            _write_tiff(image, temporary)
        else:
            _write_png(image, temporary)


def read_points(path: str | os.PathLike[str], name: str = "points") -> np.ndarray:
    """Read landmarks from a CSV of numbers, one point a row: ``(N, ndim)`` voxel indices.

    ``name`` (the option or column the path came from) starts the error messages.
    """
    try:
        return np.loadtxt(path, delimiter=",", ndmin=2)
    except OSError:
        raise FileNotFoundError(f"{name}: no such file {path}.") from None
    except ValueError as error:
        raise ValueError(f"{name}: {path} is not a CSV of numbers ({error}).") from None

