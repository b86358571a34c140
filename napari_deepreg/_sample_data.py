"""Sample data: a 2D and a 3D brain pair with tissue labels, under a known seeded deformation.

The pairs are the files in the repository's ``sample_data/`` folder (``brain2d_*.nii.gz``,
``brain3d_*.nii.gz``, made by ``sample_data/make_samples.py``): the same pair the CLI examples
and the README's numbers use, read in a fraction of a second. Only where that folder is absent
(an installed wheel) is a pair generated, which takes seconds and is a different pair:
with nilearn installed (it ships the MNI152 template offline; nothing is downloaded) the pair is
the 2 mm MNI152 T1 (fixed) and the same brain pulled through a random smooth deformation plus a
small affine (moving), with grey/white-matter labels (``deepreg_core.synth.mni_pair``). Without
nilearn it is a synthetic label-map pair (``deepreg_core.synth.synthetic_pair``). The seed is
fixed, so every load gives the same pair. Layers: ``fixed``, ``moving``, ``fixed labels`` and
``moving labels``, placed in physical space (2 mm voxels for the brain).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_deepreg._layers import LayerDataTuple, layer_data_from_image

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
ROLES = ("fixed", "moving", "fixed_labels", "moving_labels")
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


def sample_files(ndim: int, folder: Path = SAMPLE_DIR) -> list[Path] | None:
    """The four files of the ``ndim``-D sample pair in ``folder``, or None if one is missing."""
    paths = [folder / f"brain{ndim}d_{role}.nii.gz" for role in ROLES]
    return paths if all(path.is_file() for path in paths) else None


def read_pair(paths: list[Path]) -> list[LayerDataTuple]:
    """The sample files as layers ``fixed``, ``moving``, ``fixed labels``, ``moving labels``."""
    from deepreg_core.api import read_image

    layers = []
    for path, role in zip(paths, ROLES):
        labels = role.endswith("labels")
        image = read_image(path)
        data = image.data.astype(np.int32 if labels else np.float32)
        layer = layer_data_from_image(image.with_data(data), role.replace("_", " "),
                                      "labels" if labels else "image")
        if labels:
            layer[1].update(opacity=0.4, visible=False)
        layers.append(layer)
    return layers


def brain_pair(ndim: int, folder: Path = SAMPLE_DIR) -> list[LayerDataTuple]:
    """Fixed and moving images and their labels as napari layer-data tuples.

    Parameters
    ----------
    ndim : {2, 3}
    folder : Path
        Where the sample files are (:func:`sample_files`); a pair is generated without them.

    Returns
    -------
    list of (data, kwargs, layer_type)
        ``fixed``, ``moving`` (image layers) and ``fixed labels``, ``moving labels`` (labels
        layers: 0 background, 1 grey matter, 2 white matter for the brain), in physical space.
        A generated pair's moving layer holds its ground truth in the metadata,
        ``"deepreg_true_displacement"`` ``(ndim, *shape)`` in fixed voxels:
        ``warp(moving, u) ≈ fixed``.
    """
    from deepreg_core.api import Image

    paths = sample_files(ndim, folder)
    if paths is not None:
        return read_pair(paths)

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
