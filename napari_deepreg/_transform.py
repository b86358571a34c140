"""Using a registration result on other data: layers, points, files.

- :func:`warp_layer_image`: an image or label map of the moving space, resampled onto the fixed
  grid and warped (``deepreg_core.inference.apply_transform``; labels with nearest neighbour).
- :func:`warp_points`: points of the moving space mapped into the fixed grid, through the
  inverse of ``phi(x) = x + u(x)`` (a point at moving position ``q`` ends at ``phi^-1(q)``).
- :func:`export_warped` and :func:`export_transform`: NIfTI/TIFF image, ITK/ANTs displacement
  NIfTI and ITK affine text file (``deepreg_core.io`` and ``deepreg_core.interop``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def warp_layer_image(result: Any, image: Any, labels: bool) -> Any:
    """Warp an ``Image`` of the moving space onto the fixed grid (nearest for labels)."""
    from deepreg_core.inference import apply_transform

    return apply_transform(result, image, mode="nearest" if labels else "linear")


def inverse_field(result: Any) -> Any:
    """The inverse of ``result.displacement`` as a torch tensor ``(1, ndim, *spatial)``."""
    import torch

    from deepreg_core import spatial

    return spatial.invert(torch.from_numpy(np.ascontiguousarray(result.displacement))[None])


def warp_points(result: Any, world_points: np.ndarray, inverse: Any | None = None) -> np.ndarray:
    """Map moving-space points (world coordinates) to fixed voxel indices ``(N, ndim)``.

    Parameters
    ----------
    result : RegistrationResult
    world_points : np.ndarray
        ``(N, ndim)`` world coordinates of points of the moving image.
    inverse : torch.Tensor, optional
        :func:`inverse_field` of ``result``, when already computed.
    """
    import torch

    from deepreg_core import spatial

    on_fixed = result.fixed.world_to_index(np.asarray(world_points, dtype=np.float64))
    inverse = inverse_field(result) if inverse is None else inverse
    moved = spatial.transform_points(torch.from_numpy(on_fixed).float(), inverse)
    return moved.numpy().astype(np.float64)


def export_warped(result: Any, path: str | os.PathLike) -> Path:
    """Save the warped image (fixed grid and header) to ``.nii``/``.nii.gz``/``.tif``."""
    from deepreg_core.io import write_image

    write_image(result.warped, path, reference=result.fixed)
    return Path(path)


def affine_path_for(path: str | os.PathLike) -> Path:
    """Where the affine part goes next to a displacement file: ``<stem>_affine.tfm``."""
    path = Path(path)
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(f"{name}_affine.tfm")


def export_transform(result: Any, path: str | os.PathLike) -> list[Path]:
    """Save the transform: the full displacement field, and the affine part when there is one.

    Parameters
    ----------
    result : RegistrationResult
    path : str or PathLike
        ``.nii`` or ``.nii.gz``: an ITK/ANTs displacement field (LPS mm, intent 1007) on the
        fixed grid; it holds the *complete* transform (affine included). When the model had an
        affine stage its matrix is also written as an ITK text transform, ``<stem>_affine.tfm``.

    Returns
    -------
    list of Path
        The files written.
    """
    from deepreg_core import interop

    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise ValueError(
            f"{path.name}: expected a .nii or .nii.gz file name for the displacement field."
        )
    written = [interop.save_displacement_nifti(result.displacement, result.fixed, path)]
    if result.affine is not None:
        written.append(interop.save_affine_itk(result.affine, result.fixed, result.fixed,
                                               affine_path_for(path)))
    return written
