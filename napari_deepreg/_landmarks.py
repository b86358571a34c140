"""Landmarks between two napari Points layers: model names, pairs in voxel indices, checks.

Pure helpers of the Register widget's landmark section (the clicking itself is
:mod:`._pairing`):

- :func:`landmark_models` lists ``landmarks-KIND`` and ``landmarks-KIND+deformable``;
- :func:`paired_voxels` turns a fixed and a moving Points layer into corresponding voxel indices
  of each image: napari world coordinates go through each Points layer's own placement, then
  through the image's voxel-to-world matrix (``_layers.points_to_voxels``). Pairs are matched by
  a ``label`` feature shared by both layers when both have one, else by order;
- :func:`check_fit` fits the transform on the GUI thread (instant) so that too few pairs,
  unequal counts and collinear points are refused with the core's message before a job starts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepreg_core import api
from napari_deepreg import _layers

PREFIX = "landmarks-"
LABEL = "label"
"""The Points feature that names a pair (the pairing mode writes 1, 2, 3...)."""


def landmark_models(with_deformable: bool) -> list[str]:
    """Model names that fit landmarks (and then run the deformable network when available).

    >>> landmark_models(False)
    ['landmarks-rigid', 'landmarks-similarity', 'landmarks-affine', 'landmarks-tps']
    """
    names = [PREFIX + kind for kind in api.LANDMARK_KINDS]
    if with_deformable:
        names += [PREFIX + kind + "+deformable" for kind in api.LANDMARK_KINDS if kind != "tps"]
    return names


def landmark_kind(model: Any) -> str | None:
    """``"affine"`` for ``"landmarks-affine+deformable"``; None for other models.

    >>> landmark_kind("landmarks-tps"), landmark_kind("deformable")
    ('tps', None)
    """
    if not isinstance(model, str) or not model.startswith(PREFIX):
        return None
    return model.partition("+")[0][len(PREFIX):]


def landmark_only(model: Any) -> bool:
    """Whether ``model`` is a landmark fit with no network after it (instant)."""
    return landmark_kind(model) is not None and "+" not in model


def labels_of(layer: Any) -> list[str] | None:
    """The ``label`` feature of a Points layer as strings, or None when it has none."""
    features = getattr(layer, "features", None)
    if features is None or LABEL not in features.columns or len(features) != len(layer.data):
        return None
    return [str(v) for v in features[LABEL]]


def paired_voxels(fixed_layer: Any, moving_layer: Any, fixed: Any, moving: Any,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Corresponding voxel indices ``(N, ndim)`` in ``fixed`` and in ``moving``.

    Parameters
    ----------
    fixed_layer, moving_layer : napari.layers.Points
        Points clicked on the fixed and on the moving image (world coordinates).
    fixed, moving : deepreg_core.api.Image
        The images whose ``affine`` maps their voxels to the world the points were clicked in.

    Raises
    ------
    ValueError
        No points, points of the wrong dimensionality, unequal counts without shared labels,
        repeated labels or no shared label (the core's messages).
    """
    fp = _layers.points_to_voxels(fixed_layer, fixed, "fixed points")
    mp = _layers.points_to_voxels(moving_layer, moving, "moving points")
    fixed_labels, moving_labels = labels_of(fixed_layer), labels_of(moving_layer)
    if fixed_labels is None or moving_labels is None:
        fixed_labels = moving_labels = None
    return api.pair_points(fp, mp, fixed_labels, moving_labels)


def check_fit(kind: str, fp: np.ndarray, mp: np.ndarray, fixed: Any, moving: Any,
              holdout: int = 0) -> Any:
    """Fit ``kind`` to the pairs (world coordinates) and return it; ValueError says the fix.

    ``holdout`` pairs are left out of the fit by the core, so ``len(fp) - holdout`` pairs must
    still determine the transform.
    """
    fixed_world, moving_world = fixed.index_to_world(fp), moving.index_to_world(mp)
    transform = api.fit_landmarks(fixed_world, moving_world, kind)
    if holdout:
        if holdout >= len(fp):
            raise ValueError(f"landmark hold-out: {holdout} of {len(fp)} pairs leaves none to "
                             "fit. Hold out fewer pairs.")
        kept = len(fp) - holdout
        try:
            api.fit_landmarks(fixed_world[:kept], moving_world[:kept], kind)
        except ValueError as error:
            raise ValueError(f"with {holdout} pair(s) held out, {kept} are fitted: {error}") \
                from None
    return transform


def next_label(own: list[str], other: list[str]) -> int:
    """The label the next point clicked in a layer gets: its open partner's, else a new pair.

    >>> next_label(["1", "2"], ["1", "2", "3"]), next_label(["1"], ["1"])
    (3, 2)
    """
    open_pairs = [int(v) for v in other if v not in own and v.isdigit()]
    if open_pairs:
        return min(open_pairs)
    numbers = [int(v) for v in own + other if v.isdigit()]
    return max(numbers, default=0) + 1


def style_pairs(layer: Any, colour: str) -> None:
    """Show each point's pair number beside it (napari Points ``text``)."""
    if labels_of(layer) is None:
        features = layer.features.copy()
        features[LABEL] = np.arange(1, len(layer.data) + 1)
        layer.features = features
    layer.text = {"string": "{" + LABEL + "}", "size": 12, "color": colour,
                  "anchor": "upper_left", "translation": [0.0] * layer.ndim}
    layer.face_color = colour
    layer.current_face_color = colour
