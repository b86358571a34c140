"""The Inspect deformation dock widget: quality control of any displacement field.

Pick a displacement-field layer (a napari Image layer with a vector axis of size ``ndim`` first or
last, or a field opened through File -> Open, see :mod:`._fields`), the last result of a Register
widget (offered as ``"<moving> (registration)"``), or open an ITK/ANTs displacement NIfTI, and get the deformation grid,
the Jacobian determinant map (diverging colormap centred on 1), the folds (``det <= 0``, red), the
displacement magnitude, the folding fraction and a histogram of the Jacobian. Output layers are
named after the field layer and updated in place on a second analysis.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog, QLabel, QWidget

from napari_deepreg import _layers
from napari_deepreg._docks import scrolling_body
from napari_deepreg._histogram import JacobianHistogram
from napari_deepreg._jobs import JobRunner, notify_error

if TYPE_CHECKING:
    import napari


class OfferedField:
    """A Register widget's last displacement, offered in the field list without a layer."""

    def __init__(self, name: str, result: Any) -> None:
        self.name, self.result = name, result

    def take(self) -> tuple[str, np.ndarray, np.ndarray, str]:
        """Name, field in voxels, spatial voxel-to-world matrix and world unit."""
        fixed = self.result.fixed
        unit = fixed.meta.get("unit", "world units") if hasattr(fixed, "meta") else "world units"
        return (self.name, np.asarray(self.result.displacement, np.float32),
                np.asarray(fixed.affine, np.float64), unit)


def summarise(stats: Any, magnitude: np.ndarray, unit: str) -> str:
    """The text read-out of a field analysis.

    Examples
    --------
    >>> from napari_deepreg._fields import FieldStats
    >>> s = FieldStats(np.ones((4, 4)), np.zeros((4, 4), np.uint8), 0.0)
    >>> print(summarise(s, np.zeros((4, 4)), "mm"))
    folding 0.000 % (0 voxels)
    det J min 1.000, median 1.000, max 1.000
    |u| mean 0.00 mm, max 0.00 mm
    """
    jac = stats.jacobian
    return (
        f"folding {100 * stats.folding_fraction:.3f} % ({int(stats.folds.sum())} voxels)\n"
        f"det J min {jac.min():.3f}, median {np.median(jac):.3f}, max {jac.max():.3f}\n"
        f"|u| mean {magnitude.mean():.2f} {unit}, max {magnitude.max():.2f} {unit}"
    )


class InspectWidget(QWidget):
    """Grid, Jacobian, folds, magnitude and Jacobian histogram of a displacement field."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.stats: Any = None
        self.output_layers: dict[str, Any] = {}
        self.jobs = JobRunner(self, lambda _event: None, self._on_finished)
        self._field: tuple[str, np.ndarray, dict[str, Any]] | None = None
        self._offered: dict[str, OfferedField] = {}  # by moving-layer name, newest last

        def field_layers(_widget: Any) -> list[tuple[str, Any]]:
            from napari_deepreg._fields import is_field_layer

            layers = [(ly.name, ly) for ly in self.viewer.layers if is_field_layer(ly)]
            return layers + [(f"{name} (registration)", offered)
                             for name, offered in self._offered.items()]

        self.field_combo = ComboBox(label="field", choices=field_layers, nullable=True)
        self.units_combo = ComboBox(label="vectors in", choices=["voxels", "world"],
                                    value="voxels")
        self.open_button = PushButton(text="Open displacement NIfTI…")
        self.analyse_button = PushButton(text="Analyse")
        self.form = Container(widgets=[self.field_combo, self.units_combo, self.open_button,
                                       self.analyse_button])
        self.summary_label = QLabel("")
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary_label.setMinimumHeight(4 * self.summary_label.fontMetrics().lineSpacing())
        self.histogram = JacobianHistogram()
        layout = scrolling_body(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.histogram)
        layout.addStretch(1)

        self.open_button.changed.connect(self._open_clicked)
        self.analyse_button.changed.connect(self._analyse_clicked)
        self.viewer.dims.events.order.connect(self._refresh_grid)
        self.viewer.dims.events.ndisplay.connect(self._refresh_grid)
        self.reset_choices()

    def reset_choices(self, *_: Any) -> None:
        """Refresh the field picker (napari calls this when layers change)."""
        self.form.reset_choices()
        if self.field_combo.value is None and self.field_combo.choices:
            self.field_combo.value = self.field_combo.choices[-1]

    # ------------------------------------------------------------------ input
    def offer_result(self, name: str, result: Any, select: bool = False) -> OfferedField:
        """Offer a registration result's displacement as ``"<name> (registration)"``."""
        self._offered.pop(name, None)
        offered = self._offered[name] = OfferedField(name, result)
        self.form.reset_choices()
        if select or self.field_combo.value is None:
            self.field_combo.value = offered
        return offered

    def load_file(self, path: str | Path) -> Any:
        """Open an ITK/ANTs displacement NIfTI as a field layer (the same as File -> Open)."""
        from napari_deepreg._fields import field_layer_data

        data, kwargs, _ = field_layer_data(str(path))
        layer = self.viewer.add_image(data, **kwargs)
        self.reset_choices()
        self.field_combo.value = layer
        self.units_combo.value = "voxels"
        return layer

    def _take_field(self, layer: Any) -> tuple[str, np.ndarray, np.ndarray, str]:
        """Name, field in voxels, spatial voxel-to-world matrix and world unit of a layer."""
        from napari_deepreg._fields import field_from_layer

        if isinstance(layer, OfferedField):
            return layer.take()
        u, matrix = field_from_layer(layer, self.units_combo.value)
        unit = layer.metadata.get(_layers.META_KEY, {}).get("unit", "world units")
        return layer.name, u, matrix, unit

    # ------------------------------------------------------------------ analysis
    def analyse(self, layer: Any = None) -> Any:
        """Analyse ``layer`` (default: the chosen one) now, on this thread; returns the stats."""
        name, u, matrix, unit = self._take_field(self.field_combo.value if layer is None else layer)
        self._show(name, u, matrix, unit, _compute(u, matrix, self._displayed_axes(u.shape[0])))
        return self.stats

    def _analyse_clicked(self, *_: Any) -> None:
        if self.jobs.running:
            return
        try:
            name, u, matrix, unit = self._take_field(self.field_combo.value)
        except (ValueError, TypeError) as error:
            notify_error(str(error))
            return
        displayed = self._displayed_axes(u.shape[0])
        self.jobs.start(lambda: _compute(u, matrix, displayed), error_prefix="Analysis failed: ",
                        returns=lambda outputs: self._show(name, u, matrix, unit, outputs))
        self.analyse_button.enabled = False

    @property
    def worker(self) -> Any:
        """The running thread worker, or None."""
        return self.jobs.worker

    def _on_finished(self) -> None:
        self.analyse_button.enabled = True

    def _show(self, name: str, u: np.ndarray, matrix: np.ndarray, unit: str,
              outputs: dict[str, Any]) -> None:
        from napari_deepreg._rendering import jacobian_limits
        from napari_deepreg._results import (
            LayerSpec,
            fold_colormap,
            grid_spec,
            jacobian_colormap,
            robust_limits,
            show_specs,
        )

        stats = outputs["stats"]
        place = _layers.placement_from_affine(matrix)
        place.setdefault("scale", [1.0] * u.shape[0])
        place.setdefault("translate", [0.0] * u.shape[0])
        specs = [
            grid_spec(outputs["grid"], f"{name} grid", place, u.shape[1:]),
            LayerSpec("jacobian", f"{name} jacobian", "image", stats.jacobian,
                      {"colormap": jacobian_colormap(), "blending": "translucent",
                       "contrast_limits": jacobian_limits(stats.jacobian)}),
            LayerSpec("folds", f"{name} folds", "labels", stats.folds,
                      {"colormap": fold_colormap()}),
            LayerSpec("magnitude", f"{name} |u|", "image", outputs["magnitude"],
                      {"colormap": "viridis", "visible": False,
                       "contrast_limits": robust_limits(outputs["magnitude"])}),
        ]
        for spec in specs:
            if spec.role != "grid":
                spec.kwargs.update(place)
            spec.kwargs["metadata"] = {_layers.RESULT_KEY: {"role": spec.role, "source": name}}
        self.output_layers = show_specs(self.viewer, specs, name)
        self.stats, self._field = stats, (name, u, place)
        self.summary_label.setText(summarise(stats, outputs["magnitude"], unit))
        self.histogram.set_values(stats.jacobian)

    def _displayed_axes(self, ndim: int) -> tuple[int, ...]:
        return _layers.displayed_axes(self.viewer, ndim)

    def _refresh_grid(self, *_: Any) -> None:
        from napari_deepreg._results import grid_picture, grid_spec, show_specs

        layer = self.output_layers.get("grid")
        if self._field is None or layer is None or layer not in self.viewer.layers:
            return
        name, u, place = self._field
        if u.shape[0] == 3:
            spec = grid_spec(grid_picture(u, self._displayed_axes(3)), layer.name, place,
                             u.shape[1:])
            spec.kwargs["metadata"] = layer.metadata
            self.output_layers["grid"] = show_specs(self.viewer, [spec], name)["grid"]

    def _open_clicked(self, *_: Any) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open displacement field", "",
                                              "NIfTI displacement field (*.nii.gz *.nii)")
        if path:
            try:
                self.load_file(path)
            except (ValueError, TypeError, OSError) as error:
                notify_error(str(error))


def _compute(u: np.ndarray, matrix: np.ndarray, displayed: tuple[int, ...]) -> dict[str, Any]:
    """Everything shown for a field (pure; runs in a worker thread for the Analyse button)."""
    from napari_deepreg._fields import analyse_field
    from napari_deepreg._rendering import displacement_magnitude
    from napari_deepreg._results import grid_picture

    spacing = np.linalg.norm(matrix[:-1, :-1], axis=0)
    return {
        "stats": analyse_field(u),
        "magnitude": displacement_magnitude(u, spacing),
        "grid": grid_picture(u, displayed),
    }
