"""Output layers: build them from a result and add them to the viewer, or update them in place.

Every output layer carries ``metadata[RESULT_KEY] = {"role": role, "source": <name>}`` so that a
second run on the same moving layer finds its layers and replaces their data instead of piling
up new ones; a user layer that merely shares the name is never touched. Output layers sit in
the fixed layer's physical space (same scale, translate, rotate, shear and affine) and carry the
fixed image's header for saving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_deepreg import _rendering
from napari_deepreg._layers import RESULT_KEY, metadata_for

GRID_STYLE = {"colormap": "gray", "blending": "additive", "contrast_limits": (0.0, 1.0),
              "opacity": 0.25}
GRID_PATH_STYLE = {"shape_type": "path", "edge_color": "#66ccff", "edge_width": 0.2,
                   "opacity": 0.6, "blending": "translucent_no_depth"}

KEEP_CHOICES = {
    "warped + grid": ("warped", "grid", "folds"),
    "warped only": ("warped",),
    "warped + QA maps": ("warped", "grid", "folds", "checkerboard", "difference", "jacobian",
                         "magnitude", "saliency"),
}
"""Which output layers a run keeps (labels and points warped on request are always kept)."""


@dataclass
class LayerSpec:
    """One output layer: ``name``, napari ``layer_type``, ``data`` and constructor ``kwargs``."""

    role: str
    name: str
    layer_type: str
    data: np.ndarray
    kwargs: dict[str, Any] = field(default_factory=dict)


def jacobian_colormap() -> Any:
    """PiYG (pink < 1 shrinks, green > 1 grows) fading to transparent at 1.

    Where the field neither shrinks nor grows (most of the background) the anatomy shows
    through; opacity is full from a quarter of the contrast range away from 1.
    """
    from napari.utils.colormaps import Colormap, ensure_colormap

    base = ensure_colormap("PiYG")
    colors = np.array(base.colors, dtype=np.float64)
    t = np.linspace(0.0, 1.0, colors.shape[0])
    colors[:, 3] = np.clip(np.abs(t - 0.5) / 0.125, 0.0, 1.0)
    return Colormap(colors=colors, name="PiYG transparent at 1", interpolation="linear")


def fold_colormap() -> Any:
    """Labels colormap for fold masks: 1 (``det <= 0``) red, the rest transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "red"})


def render_outputs(result: Any, displayed: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """The pictures of a registration result as arrays on the fixed grid (no layers touched).

    Safe to call from a worker thread. ``displayed`` are the array axes on screen, for the
    deformation grid (see :func:`napari_deepreg._rendering.deformation_grid`).
    """
    fixed, warped = result.fixed.data, result.warped.data
    jacobian, folds = getattr(result, "jacobian", None), getattr(result, "folds", None)
    if jacobian is None or folds is None:  # computed with qa=False (or elsewhere): compute here
        from napari_deepreg._fields import analyse_field

        stats = analyse_field(result.displacement)
        jacobian, folds = stats.jacobian, stats.folds
    return {
        "checkerboard": _rendering.checkerboard(fixed, warped),
        "difference": _rendering.difference(fixed, warped),
        "jacobian": jacobian,
        "folds": folds,
        "magnitude": _rendering.displacement_magnitude(result.displacement, result.fixed.spacing),
        "grid": grid_picture(result.displacement, displayed),
    }


def grid_image(displacement: np.ndarray, displayed: tuple[int, ...] | None) -> np.ndarray:
    """The deformation grid, rendered :func:`grid_factor` times finer than the field."""
    factor = _rendering.grid_upsampling(displacement.shape[1:])
    width = 1.0 if factor > 1 else 0.8  # about one pixel wide, never broken between voxels
    return _rendering.deformation_grid(displacement, displayed=displayed, factor=factor,
                                       width=width)


def grid_placement(place: dict[str, Any], field_shape: tuple[int, ...],
                   grid_shape: tuple[int, ...]) -> dict[str, Any]:
    """Placement of a grid image rendered finer than the field: the scale divided by the factor.

    napari applies ``scale`` first, so dividing it is exact whatever the rotation or affine.
    """
    factor = (grid_shape[0] - 1) / max(field_shape[0] - 1, 1)
    return {**place, "scale": [s / factor for s in place["scale"]]}


def registration_specs(
    result: Any, outputs: dict[str, Any], moving_name: str, place: dict[str, Any],
    keep: str = "warped + grid",
) -> list[LayerSpec]:
    """The output layers of a registration, bottom to top, placed with ``place``.

    Parameters
    ----------
    result : RegistrationResult
    outputs : dict
        :func:`render_outputs` of ``result``.
    moving_name : str
        Names the layers (``"<moving> warped"``...) and tags them for the next run.
    place : dict
        napari placement keywords of the fixed layer (:func:`placement_like`).
    keep : str
        A key of :data:`KEEP_CHOICES`: which layers to make. The grid is the bottom layer, under
        the warped overlay; QA maps start hidden; folds show only when there are some.
    """
    warped = np.asarray(result.warped.data, dtype=np.float32)
    folds = outputs["folds"]
    kept = KEEP_CHOICES[keep]
    grid = [grid_spec(outputs["grid"], f"{moving_name} grid", place, warped.shape)]
    specs = grid + [
        LayerSpec("warped", f"{moving_name} warped", "image", warped,
                  {"colormap": "magenta", "blending": "additive",
                   "contrast_limits": robust_limits(warped)}),
        LayerSpec("checkerboard", f"{moving_name} checkerboard", "image", outputs["checkerboard"],
                  {"colormap": "gray", "contrast_limits": (0.0, 1.0), "visible": False}),
        LayerSpec("difference", f"{moving_name} difference", "image", outputs["difference"],
                  {"colormap": "bwr", "contrast_limits": symmetric_limits(outputs["difference"]),
                   "visible": False}),
        LayerSpec("jacobian", f"{moving_name} jacobian", "image", outputs["jacobian"],
                  {"colormap": jacobian_colormap(), "blending": "translucent",
                   "contrast_limits": _rendering.jacobian_limits(outputs["jacobian"]),
                   "visible": False}),
        LayerSpec("folds", f"{moving_name} folds", "labels", folds,
                  {"colormap": fold_colormap(), "visible": bool(folds.any())}),
        LayerSpec("magnitude", f"{moving_name} |u|", "image", outputs["magnitude"],
                  {"colormap": "viridis", "contrast_limits": robust_limits(outputs["magnitude"]),
                   "visible": False}),
        LayerSpec("saliency", f"{moving_name} saliency", "image",
                  np.asarray(result.saliency, dtype=np.float32),
                  {"colormap": "inferno", "blending": "additive",
                   "contrast_limits": robust_limits(np.asarray(result.saliency)),
                   "visible": False}),
    ]
    specs = [spec for spec in specs if spec.role in kept
             and not (spec.role == "folds" and keep != "warped + QA maps" and not folds.any())]
    if result.warped_labels is not None:
        specs.append(LayerSpec("warped labels", f"{moving_name} warped labels", "labels",
                               np.asarray(result.warped_labels.data),
                               {"opacity": 0.5, "visible": False}))
    if result.warped_points is not None:
        specs.append(LayerSpec("warped points", f"{moving_name} warped points", "points",
                               np.asarray(result.warped_points),
                               {"face_color": "yellow", "size": 3.0}))
    meta = metadata_for(result.fixed)
    for spec in specs:
        if spec.role != "grid":
            spec.kwargs.update(place)
        spec.kwargs["metadata"] = {**meta, RESULT_KEY: {"role": spec.role, "source": moving_name}}
    return specs


def grid_spec(grid: Any, name: str, place: dict[str, Any], field_shape: tuple[int, ...]
              ) -> LayerSpec:
    """The grid layer: an image (2D, slices) or 3D polylines (:func:`grid_picture`)."""
    if isinstance(grid, list):
        return LayerSpec("grid", name, "shapes", grid, {**GRID_PATH_STYLE, **place})
    return LayerSpec("grid", name, "image", grid,
                     {**GRID_STYLE, **grid_placement(place, field_shape, grid.shape)})


def grid_picture(displacement: np.ndarray, displayed: tuple[int, ...] | None) -> Any:
    """What the grid layer shows: polylines when a 3D field is rendered in 3D, else an image."""
    if displacement.shape[0] == 3 and displayed is not None and len(displayed) == 3:
        return _rendering.grid_paths(displacement)
    return grid_image(displacement, displayed)


def symmetric_limits(data: np.ndarray, percentile: float = 99.0) -> tuple[float, float]:
    """``(-r, r)`` with ``r`` the ``percentile`` of ``|data|``: a diverging map that shows detail.

    Examples
    --------
    >>> symmetric_limits(np.linspace(-0.1, 0.1, 101))
    (-0.099, 0.099)
    """
    values = np.abs(np.asarray(data, dtype=np.float64))
    spread = float(np.percentile(values, percentile)) if values.size else 0.0
    spread = round(spread, 6) if spread > 0 else 1e-3
    return (-spread, spread)


def robust_limits(data: np.ndarray) -> tuple[float, float]:
    """``(min, 99.5th percentile)``, never an empty range."""
    data = np.asarray(data)
    if data.size == 0:
        return (0.0, 1.0)
    low, high = float(np.min(data)), float(np.percentile(data, 99.5))
    return (low, high) if high > low else (low, low + 1.0)


def find_output(viewer: Any, source: str, role: str) -> Any | None:
    """The output layer of ``role`` made for moving layer ``source``, or None."""
    for layer in viewer.layers:
        tag = layer.metadata.get(RESULT_KEY)
        if isinstance(tag, dict) and tag.get("source") == source and tag.get("role") == role:
            return layer
    return None


# placement first, then display: what a second run may change on an existing output layer
_SETTABLE = ("scale", "translate", "rotate", "shear", "affine", "metadata", "colormap", "blending",
             "contrast_limits", "opacity")


def show_specs(viewer: Any, specs: list[LayerSpec], source: str) -> dict[str, Any]:
    """Add each spec as a layer, or update the layer of the same role from a previous run.

    Returns the layers by role. Updated layers keep their visibility (the user's choice) and
    take the new contrast limits (computed from the new data). A grid layer stays below the
    warped image of its run.
    """
    layers = {}
    for spec in specs:
        layer = find_output(viewer, source, spec.role)
        replace = layer is not None and (layer.__class__.__name__.lower() != spec.layer_type
                                         or spec.layer_type == "shapes"
                                         or (spec.layer_type == "image"
                                             and layer.ndim != np.ndim(spec.data)))
        if replace:
            viewer.layers.remove(layer)
            layer = None
        if layer is None:
            add = getattr(viewer, f"add_{spec.layer_type}")
            layer = add(spec.data, name=spec.name, **spec.kwargs)
        else:
            _update(layer, spec)
        layers[spec.role] = layer
    grid, warped = find_output(viewer, source, "grid"), find_output(viewer, source, "warped")
    if grid is not None and warped is not None:
        below = viewer.layers.index(warped)
        if viewer.layers.index(grid) > below:
            viewer.layers.move(viewer.layers.index(grid), below)
    return layers


def remove_outputs(viewer: Any, source: str | None = None, keep: tuple[str, ...] = ()) -> int:
    """Remove the output layers of moving layer ``source`` (all sources when None) whose role
    is not in ``keep``; returns how many were removed."""
    doomed = []
    for layer in viewer.layers:
        tag = layer.metadata.get(RESULT_KEY)
        if isinstance(tag, dict) and (source is None or tag.get("source") == source) \
                and tag.get("role") not in keep:
            doomed.append(layer)
    for layer in doomed:
        viewer.layers.remove(layer)
    return len(doomed)


def _update(layer: Any, spec: LayerSpec) -> None:
    layer.data = spec.data
    if spec.layer_type == "image" and "contrast_limits" in spec.kwargs:
        low, high = spec.kwargs["contrast_limits"]
        old_low, old_high = layer.contrast_limits_range
        layer.contrast_limits_range = (min(low, old_low), max(high, old_high))
    for key in _SETTABLE:
        if key in spec.kwargs:
            setattr(layer, key, spec.kwargs[key])
    if layer.name != spec.name:
        layer.name = spec.name
    layer.refresh()
