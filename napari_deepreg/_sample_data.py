"""Sample data: a 2D and a 3D brain pair with tissue labels, under a known seeded deformation.

With nilearn installed (it ships the MNI152 template offline; nothing is downloaded) the pair is
the 2 mm MNI152 T1 (fixed) and the same brain pulled through a random smooth deformation plus a
small affine (moving), with grey/white-matter labels (``deepreg_core.synth.mni_pair``). Without
nilearn it is a synthetic label-map pair (``deepreg_core.synth.synthetic_pair``). The seed is
fixed, so every load gives the same pair. Layers: ``fixed``, ``moving``, ``fixed labels`` and
``moving labels``, placed in physical space (2 mm voxels for the brain).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_deepreg._layers import LayerDataTuple, layer_data_from_image

SEED = 7
MNI_SHAPE_3D = (99, 117, 95)  # nilearn's 2 mm MNI152 grid
MNI_SHAPE_2D = (117, 99)  # its axial slice k = 41, anterior at the top
MNI_SPACING_MM = 2.0
SYNTH_SHAPE = {2: (128, 128), 3: (64, 64, 64)}
DEFORMATION = {"rotation": 5.0, "scale": 0.05, "shear": 0.02, "translation": 3.0,
               "velocity_std": 2.0}


def _mni_affine(ndim: int) -> np.ndarray:
    if ndim == 2:
        return np.diag([MNI_SPACING_MM, MNI_SPACING_MM, 1.0])
    from nilearn import datasets

    return np.asarray(datasets.load_mni152_template(resolution=2).affine, dtype=np.float64)


def _pair(ndim: int) -> tuple[Any, np.ndarray, str]:
    """The synthetic pair, the fixed image's affine, and its description."""
    from deepreg_core import api

    try:
        import nilearn  # noqa: F401
    except ImportError:
        shape = SYNTH_SHAPE[ndim]
        pair = api.synthetic_pair(shape, SEED, affine=True, same_contrast=True, **DEFORMATION)
        return pair, np.eye(ndim + 1), "synthetic label-map pair"
    shape = MNI_SHAPE_2D if ndim == 2 else MNI_SHAPE_3D
    pair = api.mni_pair(shape, SEED, affine=True, **DEFORMATION)
    return pair, _mni_affine(ndim), "MNI152 2 mm"


def brain_pair(ndim: int) -> list[LayerDataTuple]:
    """Fixed and moving images and their labels as napari layer-data tuples.

    Parameters
    ----------
    ndim : {2, 3}

    Returns
    -------
    list of (data, kwargs, layer_type)
        ``fixed``, ``moving`` (image layers) and ``fixed labels``, ``moving labels`` (labels
        layers: 0 background, 1 grey matter, 2 white matter for the brain), in physical space.
        The moving layer's metadata holds the ground truth, ``"deepreg_true_displacement"``
        ``(ndim, *shape)`` in fixed voxels: ``warp(moving, u) ≈ fixed``.
    """
    from deepreg_core.api import Image

    pair, affine, source = _pair(ndim)
    meta = {"source": f"napari-deepreg sample ({source}, seed {SEED})"}
    if ndim == 3:
        meta["unit"] = "mm"

    def as_image(tensor: Any, dtype: type) -> Image:
        return Image(tensor[0, 0].numpy().astype(dtype), affine, meta)

    fixed = layer_data_from_image(as_image(pair.fixed, np.float32), "fixed")
    moving = layer_data_from_image(as_image(pair.moving, np.float32), "moving")
    moving[1]["metadata"]["deepreg_true_displacement"] = pair.displacement[0].numpy()
    fixed_labels = layer_data_from_image(as_image(pair.fixed_labels, np.int32), "fixed labels",
                                         "labels")
    moving_labels = layer_data_from_image(as_image(pair.moving_labels, np.int32),
                                          "moving labels", "labels")
    for layer in (fixed, moving):
        layer[1]["contrast_limits"] = (0.0, 1.0)
    for layer in (fixed_labels, moving_labels):
        layer[1]["opacity"] = 0.4
        layer[1]["visible"] = False
    return [fixed, moving, fixed_labels, moving_labels]


def brain_pair_2d() -> list[LayerDataTuple]:
    """The 2D brain pair (an axial MNI152 slice, 2 mm pixels): see :func:`brain_pair`."""
    return brain_pair(2)


def brain_pair_3d() -> list[LayerDataTuple]:
    """The 3D brain pair (MNI152 at 2 mm): see :func:`brain_pair`."""
    return brain_pair(3)
