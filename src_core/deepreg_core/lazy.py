"""Images larger than memory: lazy opening, a level that fits, block-wise warping into zarr.

A :class:`LazyImage` is a pyramid of dask arrays (level 0 is the full resolution) with one
voxel-to-world affine per level, opened without reading voxels (:func:`open_lazy`: NIfTI through
nibabel's array proxy, a zarr array, or an OME-Zarr multiscale image). :func:`register_large`
registers on the finest level that fits a voxel budget (a pyramid level, or level 0 averaged
block-wise by an integer factor), then warps the full-resolution moving image onto the
full-resolution fixed grid block by block (:func:`warp_blockwise`): each output block maps its
voxels through the transform, reads only the moving region they reach (its bounding box plus
the one-voxel overlap linear interpolation needs) and writes into a zarr array. Nothing holds a
whole full-resolution volume; peak memory is a few blocks and regions per thread.

Geometry follows :mod:`deepreg_core.spatial`: the estimated displacement ``u`` lives on the
registration level's fixed grid ``A_c`` and maps a fixed voxel ``c`` to ``c + u(c)`` on the same
grid (the moving image resampled onto it). A full-resolution fixed voxel ``x`` goes to
``c = inv(A_c) A_f x``, then to the moving voxel ``inv(A_m) A_c (c + u(c))``. When the levels are
the full-resolution grids the block-wise warp equals :func:`deepreg_core.spatial.warp` to float
rounding.

Results are exported as OME-Zarr 0.4 (:func:`write_ome_zarr_metadata`: ``scale`` and
``translation`` transformations, a mean pyramid) and streamed into NIfTI
(:func:`write_nifti_blockwise`). OME-Zarr 0.4 has no affine or displacement transform: an image
whose direction is not the identity also carries its exact affine in ``deepreg:affine``.

Examples
--------
>>> from deepreg_core.lazy import open_lazy, register_large
>>> fixed, moving = open_lazy("fixed.ome.zarr"), open_lazy("moving.nii")  # doctest: +SKIP
>>> register_large(fixed, moving, "out", max_voxels=96**3, model="affine-3d")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import dask.array as da
    import zarr
except ImportError as error:  # pragma: no cover - the [scale] extra is missing
    raise ImportError("large images need dask and zarr; install them with "
                      "pip install 'deepreg-core[scale]'.") from error

from deepreg_core.image import Image

DEFAULT_CHUNK = 64
"""Edge of the blocks (voxels) images are read, warped and written in."""
AXES = {2: ("y", "x"), 3: ("z", "y", "x")}


@dataclass(frozen=True)
class LazyImage:
    """A pyramid of dask arrays, level 0 the full resolution, with one affine per level.

    ``levels[i]`` has shape ``(D, H, W)`` or ``(H, W)`` (array order); ``affines[i]`` is its
    ``(ndim + 1, ndim + 1)`` voxel-to-world matrix (mm).
    """

    levels: tuple[Any, ...]
    affines: tuple[np.ndarray, ...]

    @property
    def data(self):
        return self.levels[0]

    @property
    def affine(self) -> np.ndarray:
        return self.affines[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.levels[0].shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def level_image(self, max_voxels: int, scheduler: str | None = "threads"
                    ) -> tuple[Image, float]:
        """The finest level with at most ``max_voxels`` voxels, in memory, and its factor.

        A pyramid level is used when one fits; else the coarsest level is averaged over blocks of
        ``f`` voxels per axis (integer ``f``; the affine moves to the blocks' centres). Returns
        the level as an :class:`Image` and its downsampling factor (level-0 voxels per voxel).
        """
        if max_voxels < 2 ** self.ndim:
            raise ValueError(f"max_voxels: expected at least {2 ** self.ndim}, got {max_voxels}.")
        for array, affine in zip(self.levels, self.affines):
            if math.prod(array.shape) <= max_voxels:
                return _image(array, affine, scheduler), _factor(affine, self.affine)
        array, affine = self.levels[-1], self.affines[-1]
        f = 2  # a power of 2, so that it divides the chunks: each chunk is reduced on its own
        while math.prod(n // f for n in array.shape) > max_voxels and f < min(array.shape) // 2:
            f *= 2
        if any(c[0] % f for c in array.chunks):
            array = array.rechunk({i: max(f, (c[0] // f) * f) for i, c in enumerate(array.chunks)})
        coarse = da.coarsen(np.mean, array.astype(np.float32), dict.fromkeys(range(self.ndim), f),
                            trim_excess=True)
        step = np.eye(self.ndim + 1)
        step[: self.ndim, : self.ndim] *= f
        step[: self.ndim, self.ndim] = (f - 1) / 2
        return _image(coarse, affine @ step, scheduler), _factor(affine @ step, self.affine)


def _factor(level: np.ndarray, full: np.ndarray) -> float:
    n = full.shape[0] - 1
    return float(np.abs(np.linalg.det(level[:n, :n]) / np.linalg.det(full[:n, :n])) ** (1 / n))


def _image(array, affine: np.ndarray, scheduler: str | None) -> Image:
    return Image(np.asarray(array.compute(scheduler=scheduler)), affine)


def from_image(image: Image, chunks: int = DEFAULT_CHUNK) -> LazyImage:
    """Wrap an in-memory :class:`Image` (one level)."""
    return LazyImage((da.from_array(image.data, chunks=chunks),), (np.asarray(image.affine),))


# ----------------------------------------------------------------------------- opening


def open_lazy(path: str | os.PathLike[str], chunks: int = DEFAULT_CHUNK) -> LazyImage:
    """Open an image without reading its voxels: NIfTI, a zarr array, or OME-Zarr.

    NIfTI is read through nibabel's array proxy (uncompressed ``.nii`` reads any block directly;
    ``.nii.gz`` must decompress up to each block, so convert large ones to ``.nii`` or zarr).
    An OME-Zarr image (0.4 or 0.5) gives its whole pyramid, affines from each level's ``scale``
    and ``translation`` (or ``deepreg:affine``); a plain zarr array uses its ``deepreg:affine``
    attribute, else the identity.

    Raises
    ------
    FileNotFoundError, ValueError
        No such path; not 2D/3D; not a format named above.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image.")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _open_nifti(path, chunks)
    if path.is_dir():
        return _open_zarr(path)
    raise ValueError(f"{path}: expected a .nii, .nii.gz, zarr or OME-Zarr image.")


def _open_nifti(path: Path, chunks: int) -> LazyImage:
    import nibabel as nib

    from deepreg_core.io import slice_affine

    img = nib.load(path)
    shape = list(img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    if len(shape) not in (2, 3):
        raise ValueError(f"{path}: expected a 2D or 3D image, got shape {img.shape}.")
    array = da.from_array(img.dataobj, chunks=chunks, asarray=True)
    array = array.reshape(shape) if tuple(shape) != tuple(img.shape) else array
    affine = np.asarray(img.affine, dtype=np.float64)
    if len(shape) == 3 and shape[2] == 1:
        array, affine = array[:, :, 0], slice_affine(affine)
    return LazyImage((array,), (affine,))


def _transforms_affine(transforms: list[dict], ndim: int) -> np.ndarray:
    affine = np.eye(ndim + 1)
    for item in transforms:
        if item.get("type") == "scale":
            affine = np.diag([*item["scale"][-ndim:], 1.0]) @ affine
        elif item.get("type") == "translation":
            shift = np.eye(ndim + 1)
            shift[:ndim, ndim] = item["translation"][-ndim:]
            affine = shift @ affine
    return affine


def _open_zarr(path: Path) -> LazyImage:
    node = zarr.open(str(path), mode="r")
    attrs = dict(node.attrs)
    if isinstance(node, zarr.Array):
        affine = np.asarray(attrs.get("deepreg:affine", np.eye(node.ndim + 1)), dtype=np.float64)
        return LazyImage((da.from_zarr(node),), (affine,))
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        raise ValueError(f"{path}: a zarr group without OME-Zarr 'multiscales' metadata.")
    meta = multiscales[0]
    levels, affines = [], []
    exact = attrs.get("deepreg:affine")
    for index, dataset in enumerate(meta["datasets"]):
        array = da.from_zarr(node[dataset["path"]])
        spatial = sum(1 for axis in meta.get("axes", []) if isinstance(axis, dict)
                      and axis.get("type") == "space") or min(array.ndim, 3)
        array = array[(0,) * (array.ndim - spatial)] if array.ndim > spatial else array
        affine = _transforms_affine(dataset.get("coordinateTransformations", []), spatial)
        if exact is not None:  # our own export: the exact direction, scaled per level
            affine = np.asarray(exact["levels"][index], dtype=np.float64)
        levels.append(array)
        affines.append(affine)
    if levels[0].ndim not in (2, 3):
        raise ValueError(f"{path}: expected 2D or 3D spatial data, got shape {levels[0].shape}.")
    return LazyImage(tuple(levels), tuple(affines))


# ----------------------------------------------------------------------------- warping


class _Region:
    """A dask array hidden from ``map_blocks`` (which would compute array arguments whole)."""

    def __init__(self, array):
        self.array, self.shape = array, tuple(array.shape)

    def read(self, slices: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.array[slices].compute(scheduler="synchronous"), dtype=np.float32)


def _warp_block(template: np.ndarray, *, moving, to_coarse: np.ndarray, to_moving: np.ndarray,
                field, block_info=None) -> np.ndarray:
    """One output block: its voxels through the transform, sampled from the region they reach."""
    import torch

    from deepreg_core.spatial import sample_at

    location = block_info[0]["array-location"]
    ndim = len(location)
    block = tuple(b - a for a, b in location)
    axes = [np.arange(a, b, dtype=np.float64) for a, b in location]
    x = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(ndim, -1)
    c = to_coarse[:ndim, :ndim] @ x + to_coarse[:ndim, ndim:]
    if field is not None:
        points = torch.from_numpy(c).reshape(1, ndim, -1, *[1] * (ndim - 1))
        c = c + sample_at(field, points, padding="border").reshape(ndim, -1).numpy()
    m = to_moving[:ndim, :ndim] @ c + to_moving[:ndim, ndim:]
    shape = np.asarray(moving.shape)
    # the bounding box plus the overlap linear interpolation reads, at least 2 voxels wide (the
    # sampler normalises coordinates by the region's size: a 1-voxel axis would be constant)
    low = np.clip(np.floor(m.min(axis=1)).astype(int), 0, np.maximum(shape - 2, 0))
    high = np.clip(np.floor(m.max(axis=1)).astype(int) + 2, np.minimum(low + 2, shape), shape)
    if not np.all(np.isfinite(m)) or np.any(m.max(axis=1) <= -1) or np.any(m.min(axis=1) >= shape):
        return np.zeros(block, np.float32)  # the block maps wholly outside the moving image
    region = moving.read(tuple(slice(a, b) for a, b in zip(low, high)))
    coords = torch.from_numpy((m - low[:, None]).astype(np.float32)).reshape(1, ndim, *block)
    return sample_at(torch.from_numpy(region)[None, None], coords)[0, 0].numpy()


def warp_blockwise(moving: LazyImage, fixed_shape, fixed_affine: np.ndarray, target, *,
                   displacement: np.ndarray | None = None, grid_affine: np.ndarray | None = None,
                   chunks: int = DEFAULT_CHUNK, scheduler: str | None = "threads"):
    """Warp ``moving`` onto a fixed grid block by block, writing into the zarr array ``target``.

    Parameters
    ----------
    moving : LazyImage
        Its level 0 is sampled (linear, zeros outside).
    fixed_shape, fixed_affine
        The output grid: shape (array order) and voxel-to-world affine.
    target : zarr.Array
        Of ``fixed_shape`` and float dtype; written block by block (its chunks should be
        ``chunks``).
    displacement : ndarray, shape (ndim, *grid_shape), optional
        The transform in voxels of the grid ``grid_affine`` (see the module docstring); None is
        the identity (a pure resampling through the world affines).
    scheduler : str, optional
        A dask scheduler for the blocks (``"threads"``, ``"synchronous"``; None: dask's default,
        a distributed client when one is active).

    Returns
    -------
    The ``target`` array.
    """
    import torch

    ndim = len(fixed_shape)
    fixed_affine = np.asarray(fixed_affine, dtype=np.float64)
    grid_affine = fixed_affine if grid_affine is None else np.asarray(grid_affine, np.float64)
    if moving.ndim != ndim:
        raise ValueError(f"moving: expected a {ndim}D image like the fixed grid, got "
                         f"{moving.ndim}D {moving.shape}.")
    if displacement is not None and (displacement.ndim != ndim + 1 or displacement.shape[0] != ndim):
        raise ValueError(f"displacement: expected shape ({ndim}, *grid), got "
                         f"{displacement.shape}.")
    if tuple(target.shape) != tuple(fixed_shape):
        raise ValueError(f"target: expected shape {tuple(fixed_shape)}, got {target.shape}.")
    field = None if displacement is None else \
        torch.from_numpy(np.ascontiguousarray(displacement, dtype=np.float64))[None]
    template = da.empty(tuple(fixed_shape), chunks=chunks, dtype=np.uint8)
    warped = da.map_blocks(
        _warp_block, template, dtype=np.float32, meta=np.empty((0,) * ndim, np.float32),
        moving=_Region(moving.data), field=field,
        to_coarse=np.linalg.inv(grid_affine) @ fixed_affine,
        to_moving=np.linalg.inv(moving.affine) @ grid_affine)
    da.store(warped, target, lock=False, scheduler=scheduler)
    return target


# ----------------------------------------------------------------------------- writing


def create_zarr(path: str | os.PathLike[str], shape, chunks: int = DEFAULT_CHUNK,
                dtype=np.float32):
    """An empty zarr (format 2, as OME-Zarr 0.4 wants) array at ``path`` for block-wise writes."""
    return zarr.open_array(str(path), mode="w", shape=tuple(shape), dtype=dtype,
                           chunks=(chunks,) * len(shape), zarr_format=2, fill_value=0)


def _direction_is_identity(affine: np.ndarray) -> bool:
    n = affine.shape[0] - 1
    linear = affine[:n, :n]
    return bool(np.allclose(linear, np.diag(np.diag(linear))) and np.all(np.diag(linear) > 0))


def write_ome_zarr_metadata(group_path: str | os.PathLike[str], affine: np.ndarray, *,
                            levels: int = 3, chunks: int = DEFAULT_CHUNK,
                            name: str = "image", scheduler: str | None = "threads") -> Path:
    """Turn a folder holding level ``0`` (a zarr array) into an OME-Zarr 0.4 multiscale image.

    Levels ``1 ... levels-1`` are written block-wise, each the mean of 2 voxels per axis of the
    one before (stopping before an axis would drop under 2 voxels); every level gets ``scale``
    and ``translation`` transformations from ``affine`` (level 0's voxel-to-world). A direction
    that is not the identity (rotations, flips) is not expressible in 0.4: the exact per-level
    affines go to the group attribute ``deepreg:affine`` and scale/translation hold the spacing
    and the origin.
    """
    root = Path(group_path)
    group = zarr.open_group(str(root), mode="a", zarr_format=2)
    base = da.from_zarr(group["0"])
    ndim = base.ndim
    affine = np.asarray(affine, dtype=np.float64)
    affines = [affine]
    current = base
    for level in range(1, levels):
        if min(current.shape) < 4:
            break
        current = current.rechunk({i: max(2, (c[0] // 2) * 2) for i, c in enumerate(current.chunks)})
        coarse = da.coarsen(np.mean, current, dict.fromkeys(range(ndim), 2), trim_excess=True)
        target = create_zarr(root / str(level), coarse.shape, chunks, base.dtype)
        da.store(coarse.astype(base.dtype), target, lock=False, scheduler=scheduler)
        step = np.eye(ndim + 1)
        step[:ndim, :ndim] *= 2
        step[:ndim, ndim] = 0.5
        affines.append(affines[-1] @ step)
        current = da.from_zarr(target)
    datasets = []
    for index, level_affine in enumerate(affines):
        spacing = np.linalg.norm(level_affine[:ndim, :ndim], axis=0)
        direction = level_affine[:ndim, :ndim] / spacing
        origin = direction.T @ level_affine[:ndim, ndim]  # exact for an identity direction
        datasets.append({"path": str(index), "coordinateTransformations": [
            {"type": "scale", "scale": spacing.tolist()},
            {"type": "translation", "translation": origin.tolist()}]})
    attrs: dict[str, Any] = {"multiscales": [{
        "version": "0.4", "name": name, "type": "mean", "datasets": datasets,
        "axes": [{"name": a, "type": "space", "unit": "millimeter"} for a in AXES[ndim]]}]}
    if not _direction_is_identity(affine):
        attrs["deepreg:affine"] = {"levels": [a.tolist() for a in affines]}
    group.attrs.update(attrs)
    return root


def write_nifti_blockwise(source, affine: np.ndarray, path: str | os.PathLike[str], *,
                          scheduler: str | None = "threads") -> Path:
    """Stream a 2D/3D array (zarr or dask) into a NIfTI file, one slab at a time.

    NIfTI stores the first axis fastest, so slabs along the last axis are written in Fortran
    order; ``.nii.gz`` is compressed as it streams. The file appears atomically.
    """
    import gzip

    import nibabel as nib

    from deepreg_core._files import atomic_target

    path = Path(path)
    array = da.from_zarr(source) if isinstance(source, zarr.Array) else da.asarray(source)
    shape3 = tuple(array.shape) + (1,) * (3 - array.ndim)
    affine = np.asarray(affine, dtype=np.float64)
    if array.ndim == 2:
        full = np.eye(4)
        full[np.ix_([0, 1, 3], [0, 1, 3])] = affine
        affine = full
    header = nib.Nifti1Header()
    header.set_data_shape(shape3)
    header.set_data_dtype(np.dtype(array.dtype))
    header.set_qform(affine, code=2)
    header.set_sform(affine, code=2)
    header.set_xyzt_units(xyz="mm")
    header["vox_offset"] = 352
    slab = max(1, int(array.chunksize[-1]) if array.ndim == 3 else 1)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    with atomic_target(path, suffix) as temporary:
        with opener(temporary, "wb") as handle:
            handle.write(header.binaryblock + b"\x00" * 4)
            if array.ndim == 2:
                handle.write(np.asarray(array.compute(scheduler=scheduler)).tobytes(order="F"))
            else:
                for start in range(0, shape3[2], slab):
                    part = np.asarray(array[:, :, start:start + slab].compute(scheduler=scheduler))
                    handle.write(part.tobytes(order="F"))
    return path


# ----------------------------------------------------------------------------- registering


@dataclass(frozen=True)
class LargeResult:
    """What :func:`register_large` wrote and how: the level, its factor, the metrics."""

    output: Path
    level_shape: tuple[int, ...]
    factor: float
    metrics: dict[str, Any]


def register_large(fixed: LazyImage | str | os.PathLike[str],
                   moving: LazyImage | str | os.PathLike[str], output: str | os.PathLike[str], *,
                   max_voxels: int = 128**3, chunks: int = DEFAULT_CHUNK, nifti: bool = True,
                   pyramid_levels: int = 3, scheduler: str | None = "threads",
                   **register_kwargs: Any) -> LargeResult:
    """Register on a level that fits ``max_voxels``, warp the full resolution block by block.

    ``output`` (a new folder, published whole) receives ``warped.ome.zarr`` (level 0 on the
    full-resolution fixed grid, with a pyramid), ``warped.nii.gz`` when ``nifti``, and the
    registration level's ``displacement.nii.gz`` and ``metrics.json`` (which level was used:
    ``level_shape``, ``factor``). ``register_kwargs`` go to
    :func:`deepreg_core.inference.register` (``model``, ``preset``, ``refine_steps``, ...).
    """
    from deepreg_core._files import atomic_write_text
    from deepreg_core._outputs import check_output_folder, output_lock, recover, staged_folder
    from deepreg_core.inference import register
    from deepreg_core.interop import save_displacement_nifti

    fixed = fixed if isinstance(fixed, LazyImage) else open_lazy(fixed, chunks)
    moving = moving if isinstance(moving, LazyImage) else open_lazy(moving, chunks)
    output = check_output_folder(output, overwrite=False)
    fixed_level, factor = fixed.level_image(max_voxels, scheduler)
    moving_level, _ = moving.level_image(max_voxels, scheduler)
    result = register(fixed_level, moving_level, **register_kwargs)
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    metrics.update(level_shape=list(fixed_level.shape), factor=factor,
                   full_shape=list(fixed.shape), model=result.model_name)
    with output_lock(output):
        recover(output)
        with staged_folder(output) as staging:
            target = create_zarr(staging / "warped.ome.zarr" / "0", fixed.shape, chunks)
            warp_blockwise(moving, fixed.shape, fixed.affine, target,
                           displacement=result.displacement, grid_affine=fixed_level.affine,
                           chunks=chunks, scheduler=scheduler)
            write_ome_zarr_metadata(staging / "warped.ome.zarr", fixed.affine, chunks=chunks,
                                    levels=pyramid_levels, name="warped", scheduler=scheduler)
            if nifti:
                write_nifti_blockwise(target, fixed.affine, staging / "warped.nii.gz",
                                      scheduler=scheduler)
            save_displacement_nifti(result.displacement, fixed_level,
                                    staging / "displacement.nii.gz")
            atomic_write_text(staging / "metrics.json",
                              json.dumps(metrics, indent=2, sort_keys=True, default=float))
    return LargeResult(output=Path(output).resolve(), level_shape=fixed_level.shape,
                       factor=factor, metrics=metrics)


__all__ = ["LazyImage", "LargeResult", "open_lazy", "from_image", "warp_blockwise",
           "create_zarr", "write_ome_zarr_metadata", "write_nifti_blockwise", "register_large"]
