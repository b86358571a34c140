"""What the Register widget does with a result once it is shown: a mixin of its actions.

- The user's layers: the green/magenta overlay (fixed tinted, moving hidden) only when ticked,
  their colormap and visibility remembered and restored by "Clear results" or by unticking.
- Using the result: apply it to other layers, save the warped image and the transform, open the
  field in the Inspect dock.

Methods expect the attributes :class:`~napari_deepreg._register_widget.RegisterWidget` sets
(``viewer``, ``result``, ``_source``, ``_place``, ``_sources``, ``_restore``...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import QFileDialog

from deepreg_core import api
from napari_deepreg import _layers
from napari_deepreg._jobs import notify_error


class ResultActions:
    """The Register widget's actions on its last result and on the user's layers."""

    # ------------------------------------------------------------------ the user's layers
    def _apply_overlay(self) -> None:
        """Green fixed + magenta warped (white where they agree); the moving layer hidden."""
        fixed_layer, moving_layer = getattr(self, "_user_layers", (None, None))
        for layer, change in ((fixed_layer, "colormap"), (moving_layer, "visible")):
            if layer is None or layer not in self.viewer.layers:
                continue
            self._restore.setdefault(layer, (layer.colormap, layer.visible))
            if change == "colormap":
                layer.colormap = "green"
            else:
                layer.visible = False

    def _restore_user_layers(self) -> None:
        """Give the user's layers back the colormap and visibility they had before the overlay."""
        for layer, (colormap, visible) in self._restore.items():
            if layer in self.viewer.layers:
                layer.colormap, layer.visible = colormap, visible
        self._restore.clear()

    def _overlay_changed(self, on: bool) -> None:
        if on and self.result is not None:
            self._apply_overlay()
        elif not on:
            self._restore_user_layers()

    def clear_results(self, *_: Any) -> int:
        """Remove this widget's output layers and restore the user's layers; returns the count."""
        from napari_deepreg._results import remove_outputs

        removed = sum(remove_outputs(self.viewer, source) for source in self._sources)
        self._sources.clear()
        self.output_layers = {}
        self._restore_user_layers()
        self.status_label.value = f"cleared {removed} result layer(s)"
        return removed

    def inspect_field(self) -> Any:
        """Open the Inspect dock on the last result's displacement and analyse it."""
        if self.result is None:
            raise ValueError("No registration result yet: press Run first.")
        window = getattr(self.viewer, "window", None)
        if window is None:
            raise ValueError("Inspect needs the napari window.")
        _, inspect = window.add_plugin_dock_widget("napari-deepreg", "Inspect deformation")
        inspect.offer_result(self._source, self.result, select=True)
        inspect.analyse()
        return inspect

    def _inspect_clicked(self, *_: Any) -> None:
        self._guarded(self.inspect_field)

    # ------------------------------------------------------------------ use the result
    def apply_to_layer(self, layer: Any) -> Any:
        """Warp another layer of the moving space onto the fixed grid; returns the new layer.

        Images are interpolated linearly, labels with nearest neighbour, points moved through the
        inverse transform. The output is named ``"<layer> warped"`` and updated on a re-run.
        """
        from napari_deepreg._results import LayerSpec, show_specs

        if self.result is None:
            raise ValueError("No registration result yet: press Run first.")
        kind = layer.__class__.__name__
        if kind == "Points":
            matrix = _layers.layer_world_matrix(layer)
            world = layer.data @ matrix[:-1, :-1].T + matrix[:-1, -1]
            if world.shape[1] != self.result.fixed.ndim:
                raise ValueError(f"{layer.name!r}: expected {self.result.fixed.ndim}D points.")
            if self._inverse is None:
                self._inverse = api.inverse_displacement(self.result)
            data = api.moving_points_to_fixed(self.result, world, self._inverse)
            size = float(np.mean(layer.size)) if len(layer.size) else 3.0
            layer_type, style = "points", {"face_color": "yellow", "size": size}
        elif kind in ("Image", "Labels"):
            labels = kind == "Labels"
            image = _layers.layer_to_image(layer, layer.name, kind="labels" if labels else "image")
            data = api.apply_transform(self.result, image,
                                       mode="nearest" if labels else "linear").data
            layer_type, style = kind.lower(), {"opacity": 0.5} if labels else {}
        else:
            raise TypeError(
                f"{layer.name!r}: expected an Image, Labels or Points layer, got {kind}."
            )
        spec = LayerSpec("applied", f"{layer.name} warped", layer_type, data,
                         {**style, **self._place})
        spec.kwargs["metadata"] = {**_layers.metadata_for(self.result.fixed),
                                   _layers.RESULT_KEY: {"role": "applied", "source": layer.name}}
        return show_specs(self.viewer, [spec], layer.name)["applied"]

    def export_warped(self, path: str | Path) -> Path:
        """Save the warped image (fixed grid and header) to ``path``."""
        if self.result is None:
            raise ValueError("No registration result yet: press Run first.")
        return api.save_warped(self.result, path)

    def export_transform(self, path: str | Path) -> list[Path]:
        """Save the displacement field (ITK/ANTs NIfTI) and, if any, the affine (``.tfm``)."""
        if self.result is None:
            raise ValueError("No registration result yet: press Run first.")
        return api.save_transform(self.result, path)

    def _guarded(self, action: Any, *args: Any) -> Any:
        try:
            return action(*args)
        except (ValueError, TypeError, OSError) as error:
            notify_error(str(error))
            return None

    def _apply_clicked(self, *_: Any) -> None:
        if self.apply_combo.value is None:
            notify_error("apply to: no layer chosen. Pick an image, labels or points layer.")
            return
        self._guarded(self.apply_to_layer, self.apply_combo.value)

    def _export_warped_clicked(self, *_: Any) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save warped image", f"{self._source} warped.nii.gz",
            "NIfTI (*.nii.gz *.nii);;TIFF (*.tif)")
        if path:
            self._guarded(self.export_warped, path)

    def _export_transform_clicked(self, *_: Any) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save transform (displacement field)", f"{self._source}_warp.nii.gz",
            "NIfTI displacement field (*.nii.gz *.nii)")
        if path:
            self._guarded(self.export_transform, path)
