"""The public facade: what a GUI, a script or a notebook needs, from one module.

The napari plugin imports only this module (and the event types it re-exports); scripts may
too. Everything here is a stable name; the modules behind it may move. Names are loaded on
first use, so ``import deepreg_core.api`` costs nothing until something is called.

Images and files
    :class:`Image`, :func:`read_image`, :func:`write_image`, :data:`SUPPORTED_SUFFIXES`,
    :func:`image_stem`, :func:`resample_to`.
Registration
    :func:`register`, :func:`register_iter` (events), :class:`RegistrationResult`,
    :data:`PRESETS`, :func:`apply_transform`, :func:`inverse_displacement`,
    :func:`moving_points_to_fixed`, :func:`save_warped`, :func:`save_transform`.
Time series and channels
    :func:`register_series`, :func:`register_series_iter` (events), :class:`SeriesResult`;
    :func:`register_channels`, :func:`register_channels_iter`, :class:`ChannelsResult`.
Events
    :class:`Event`, :class:`Started`, :class:`Progress`, :class:`Metrics`, :class:`Finished`,
    :class:`Stopped`, :class:`StopToken`.
Training
    :class:`TrainConfig`, :func:`load_config`, :func:`save_config`, :func:`train`,
    :func:`latest_checkpoint`.
Models
    :func:`list_models`, :func:`broken_models`, :func:`load_model` (a :class:`LoadedModel`
    with its :class:`ModelSpec`), :func:`model_entry`, :func:`model_card`,
    :func:`resolve_model_name`, :func:`user_model_dir`, :func:`publish_model`,
    :data:`DEVICE_CHOICES`.
Fields
    :func:`field_quality` (:class:`FieldQuality`), :func:`read_displacement`.
Scale (the ``[scale]`` extra: dask.distributed, zarr)
    :func:`batch`, :func:`batch_iter`, :func:`read_pairs`, :func:`folder_pairs`, :class:`Pair`,
    :class:`BatchSummary`; :func:`open_lazy` (:class:`LazyImage`), :func:`register_large`,
    :func:`warp_blockwise`.
Landmarks
    :func:`fit_landmarks` (rigid, similarity, affine, thin-plate spline), :func:`pair_points`
    (by order or label), :func:`landmark_displacement`; ``register(model="landmarks-affine")``.
Sample data
    :func:`mni_pair`, :func:`synthetic_pair` (pairs with known deformations).

Examples
--------
>>> from deepreg_core import api
>>> api.resolve_model_name("deformable", 3)
'deformable-3d'
>>> api.image_stem("scans/sub-01_T1w.nii.gz")
'sub-01_T1w'
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from deepreg_core.batch import (
        BatchSummary,
        Pair,
        batch,
        batch_iter,
        folder_pairs,
        read_pairs,
    )
    from deepreg_core.channels import ChannelsResult, register_channels, register_channels_iter
    from deepreg_core.device import DEVICE_CHOICES
    from deepreg_core.events import Event, Finished, Metrics, Progress, Started, Stopped, StopToken
    from deepreg_core.image import Image
    from deepreg_core.inference import (
        PRESETS,
        RegistrationResult,
        apply_transform,
        register,
        register_iter,
    )
    from deepreg_core.interop import load_displacement_nifti as read_displacement
    from deepreg_core.io import SUPPORTED_SUFFIXES, read_image, write_image
    from deepreg_core.landmarks import KINDS as LANDMARK_KINDS
    from deepreg_core.landmarks import displacement_on_grid as landmark_displacement
    from deepreg_core.landmarks import fit_transform as fit_landmarks
    from deepreg_core.landmarks import pair_points
    from deepreg_core.lazy import LazyImage, open_lazy, register_large, warp_blockwise
    from deepreg_core.metrics import FieldQuality, field_quality
    from deepreg_core.series import SeriesResult, register_series, register_series_iter
    from deepreg_core.spatial import resample_to
    from deepreg_core.synth import mni_pair, synthetic_pair
    from deepreg_core.training.config import TrainConfig, load_config, save_config
    from deepreg_core.training.loop import latest_checkpoint, train
    from deepreg_core.zoo import broken_models, list_models, model_card, user_model_dir
    from deepreg_core.zoo import get as model_entry
    from deepreg_core.zoo import load as load_model
    from deepreg_core.zoo import publish as publish_model
    from deepreg_core.zoo import resolve_name as resolve_model_name
    from deepreg_core.zoo.spec import LoadedModel, ModelSpec

_LAZY: dict[str, tuple[str, str]] = {
    # images and files
    "Image": ("deepreg_core.image", "Image"),
    "read_image": ("deepreg_core.io", "read_image"),
    "write_image": ("deepreg_core.io", "write_image"),
    "SUPPORTED_SUFFIXES": ("deepreg_core.io", "SUPPORTED_SUFFIXES"),
    "resample_to": ("deepreg_core.spatial", "resample_to"),
    # registration
    "register": ("deepreg_core.inference", "register"),
    "register_iter": ("deepreg_core.inference", "register_iter"),
    "RegistrationResult": ("deepreg_core.inference", "RegistrationResult"),
    "PRESETS": ("deepreg_core.inference", "PRESETS"),
    "apply_transform": ("deepreg_core.inference", "apply_transform"),
    # time series and channels
    "register_series": ("deepreg_core.series", "register_series"),
    "register_series_iter": ("deepreg_core.series", "register_series_iter"),
    "SeriesResult": ("deepreg_core.series", "SeriesResult"),
    "register_channels": ("deepreg_core.channels", "register_channels"),
    "register_channels_iter": ("deepreg_core.channels", "register_channels_iter"),
    "ChannelsResult": ("deepreg_core.channels", "ChannelsResult"),
    # events
    "Event": ("deepreg_core.events", "Event"),
    "Started": ("deepreg_core.events", "Started"),
    "Progress": ("deepreg_core.events", "Progress"),
    "Metrics": ("deepreg_core.events", "Metrics"),
    "Finished": ("deepreg_core.events", "Finished"),
    "Stopped": ("deepreg_core.events", "Stopped"),
    "StopToken": ("deepreg_core.events", "StopToken"),
    # training
    "TrainConfig": ("deepreg_core.training.config", "TrainConfig"),
    "load_config": ("deepreg_core.training.config", "load_config"),
    "save_config": ("deepreg_core.training.config", "save_config"),
    "train": ("deepreg_core.training.loop", "train"),
    "latest_checkpoint": ("deepreg_core.training.loop", "latest_checkpoint"),
    # models
    "list_models": ("deepreg_core.zoo", "list_models"),
    "broken_models": ("deepreg_core.zoo", "broken_models"),
    "load_model": ("deepreg_core.zoo", "load"),
    "model_entry": ("deepreg_core.zoo", "get"),
    "model_card": ("deepreg_core.zoo", "model_card"),
    "resolve_model_name": ("deepreg_core.zoo", "resolve_name"),
    "user_model_dir": ("deepreg_core.zoo", "user_model_dir"),
    "publish_model": ("deepreg_core.zoo", "publish"),
    "LoadedModel": ("deepreg_core.zoo.spec", "LoadedModel"),
    "ModelSpec": ("deepreg_core.zoo.spec", "ModelSpec"),
    "DEVICE_CHOICES": ("deepreg_core.device", "DEVICE_CHOICES"),
    # scale
    "batch": ("deepreg_core.batch", "batch"),
    "batch_iter": ("deepreg_core.batch", "batch_iter"),
    "read_pairs": ("deepreg_core.batch", "read_pairs"),
    "folder_pairs": ("deepreg_core.batch", "folder_pairs"),
    "Pair": ("deepreg_core.batch", "Pair"),
    "BatchSummary": ("deepreg_core.batch", "BatchSummary"),
    "open_lazy": ("deepreg_core.lazy", "open_lazy"),
    "LazyImage": ("deepreg_core.lazy", "LazyImage"),
    "register_large": ("deepreg_core.lazy", "register_large"),
    "warp_blockwise": ("deepreg_core.lazy", "warp_blockwise"),
    # landmarks
    "fit_landmarks": ("deepreg_core.landmarks", "fit_transform"),
    "pair_points": ("deepreg_core.landmarks", "pair_points"),
    "landmark_displacement": ("deepreg_core.landmarks", "displacement_on_grid"),
    "LANDMARK_KINDS": ("deepreg_core.landmarks", "KINDS"),
    # sample data
    "mni_pair": ("deepreg_core.synth", "mni_pair"),
    "synthetic_pair": ("deepreg_core.synth", "synthetic_pair"),
    # fields
    "field_quality": ("deepreg_core.metrics", "field_quality"),
    "FieldQuality": ("deepreg_core.metrics", "FieldQuality"),
    "read_displacement": ("deepreg_core.interop", "load_displacement_nifti"),
}

__all__ = sorted([*_LAZY, "affine_path_for", "image_stem", "inverse_displacement", "moving_points_to_fixed",
                  "save_transform", "save_warped"])


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'deepreg_core.api' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return __all__


def image_stem(path: str | os.PathLike) -> str:
    """A file's name without its image suffix (``.nii.gz`` counts as one), for layer names."""
    from deepreg_core.io import SUPPORTED_SUFFIXES

    name = Path(path).name
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def inverse_displacement(result: RegistrationResult) -> np.ndarray:
    """The inverse of ``result.displacement``, ``(ndim, *fixed.shape)`` in fixed voxels."""
    import torch

    from deepreg_core import spatial

    field = torch.from_numpy(np.ascontiguousarray(result.displacement, dtype=np.float32))[None]
    return spatial.invert(field)[0].numpy()


def moving_points_to_fixed(result: RegistrationResult, world_points: np.ndarray,
                           inverse: np.ndarray | None = None) -> np.ndarray:
    """Map points of the moving image (world coordinates) to fixed voxel indices ``(N, ndim)``.

    ``inverse`` is :func:`inverse_displacement` of ``result`` when already computed (mapping
    several point sets).
    """
    import torch

    from deepreg_core import spatial

    on_fixed = result.fixed.world_to_index(np.asarray(world_points, dtype=np.float64))
    inverse = inverse_displacement(result) if inverse is None else inverse
    moved = spatial.transform_points(torch.from_numpy(on_fixed).float(),
                                     torch.from_numpy(np.ascontiguousarray(inverse))[None])
    return moved.numpy().astype(np.float64)


def save_warped(result: RegistrationResult, path: str | os.PathLike) -> Path:
    """Save the warped image (fixed grid and header) as ``.nii``/``.nii.gz``/``.tif``/``.png``."""
    from deepreg_core.io import write_image

    write_image(result.warped, path, reference=result.fixed)
    return Path(path)


def affine_path_for(path: str | os.PathLike) -> Path:
    """Where :func:`save_transform` puts the affine part: ``<stem>_affine.tfm`` beside ``path``."""
    path = Path(path)
    return path.with_name(f"{image_stem(path)}_affine.tfm")


def save_transform(result: RegistrationResult, path: str | os.PathLike) -> list[Path]:
    """Save the transform: the whole displacement field, and the affine part when there is one.

    ``path`` ends in ``.nii`` or ``.nii.gz``: an ITK/ANTs displacement field (LPS mm, intent
    1007) on the fixed grid, holding the complete transform (affine included). When the
    registration had an affine stage its matrix is also written as an ITK text transform,
    :func:`affine_path_for`. Returns the files written.
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
