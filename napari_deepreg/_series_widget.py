"""The Time series dock widget: register every frame of a 2D+t or 3D+t layer to a reference.

The widget adapts the core's ``register_series_iter`` generator (``docs/architecture.md``): the
layer's data are copied on the GUI thread, the job runs in a thread worker through
:class:`~napari_deepreg._jobs.JobRunner`, each frame's ``Metrics`` event adds a point to the drift
plot (mean displacement in world units against frame) and a line to the read-out, and the
corrected stack arrives as one layer named ``"<layer> corrected"`` placed like the input (time
axis where it was). **Cancel** stops within the current frame and keeps the frames already done
(the core's ``Stopped(result=...)``). The time axis is read from napari's axis labels (``t`` or
``time``) when the layer has them, else it is the first axis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton, SpinBox
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QLabel, QWidget

from deepreg_core import api
from napari_deepreg import _layers
from napari_deepreg._docks import scrolling_body
from napari_deepreg._jobs import JobRunner, notify_error, notify_info, notify_warning
from napari_deepreg._loss_plot import LossPlot
from napari_deepreg._register_job import JobFailed

if TYPE_CHECKING:
    import napari

REFERENCES = ("first", "previous", "mean", "frame")
TIME_LABELS = ("t", "time", "frame", "frames")


def series_job(data: np.ndarray, options: dict[str, Any], stop: Any):
    """The core's series events; :class:`JobFailed` instead of raising (messages say the fix)."""
    try:
        yield from api.register_series_iter(data, stop=stop, **options)
    except (ValueError, TypeError) as error:
        yield JobFailed(str(error))


def time_axis_of(viewer: Any, layer: Any) -> int:
    """The layer axis labelled ``t``/``time`` in napari's dims, else 0."""
    labels = list(viewer.dims.axis_labels)[-layer.ndim:]
    for axis, label in enumerate(labels):
        if str(label).lower() in TIME_LABELS:
            return axis
    return 0


class SeriesWidget(QWidget):
    """Motion and drift correction of a time series layer (frames to a reference)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.result: Any = None
        self.output_layer: Any = None
        self._layer: Any = None
        self.jobs = JobRunner(self, self._on_event, self._on_finished)

        def series_layers(_widget: Any) -> list[tuple[str, Any]]:
            return [(ly.name, ly) for ly in self.viewer.layers
                    if ly.__class__.__name__ == "Image" and ly.ndim in (3, 4)
                    and not getattr(ly, "rgb", False)]

        self.layer_combo = ComboBox(label="series", choices=series_layers, nullable=True)
        self.time_spin = SpinBox(label="time axis", min=0, max=3, value=0)
        self.reference_combo = ComboBox(label="reference", choices=list(REFERENCES),
                                        value="first")
        self.frame_spin = SpinBox(label="frame", min=0, max=100_000, value=0, enabled=False)
        self.model_combo = ComboBox(label="model", choices=["rigid", "affine", "deformable"],
                                    value="affine")
        self.preset_combo = ComboBox(label="preset", choices=["auto", "fast", "accurate"],
                                     value="auto")
        self.device_combo = ComboBox(label="device", choices=list(api.DEVICE_CHOICES),
                                     value="auto")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status_label = Label(value="")
        self.drift_plot = LossPlot(colors={"drift": QColor(255, 150, 40)},
                                   legend="— mean drift per frame", empty="drift appears here",
                                   x_label="frame", tooltip="mean displacement per frame")
        self.metrics_label = QLabel("")
        self.metrics_label.setWordWrap(True)
        self.form = Container(widgets=[
            self.layer_combo, self.time_spin, self.reference_combo, self.frame_spin,
            self.model_combo, self.preset_combo, self.device_combo,
            Container(widgets=[self.run_button, self.cancel_button], layout="horizontal",
                      labels=False),
            self.progress, self.status_label,
        ])
        layout = scrolling_body(self)
        for part in (self.form.native, self.drift_plot, self.metrics_label):
            layout.addWidget(part)
        layout.addStretch(1)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.layer_combo.changed.connect(self._layer_changed)
        self.reference_combo.changed.connect(
            lambda value: setattr(self.frame_spin, "enabled", value == "frame"))
        self.reset_choices()

    def reset_choices(self, *_: Any) -> None:
        """Refresh the layer picker (napari calls this when layers change)."""
        self.form.reset_choices()

    def _layer_changed(self, layer: Any) -> None:
        if layer is not None:
            self.time_spin.max = layer.ndim - 1
            self.time_spin.value = time_axis_of(self.viewer, layer)

    @property
    def worker(self) -> Any:
        """The running thread worker, or None."""
        return self.jobs.worker

    def _collect(self) -> tuple[np.ndarray, dict[str, Any]]:
        layer = self.layer_combo.value
        if layer is None:
            raise ValueError("series: no layer chosen. Pick a 2D+t or 3D+t image layer.")
        axis = int(self.time_spin.value)
        if not 0 <= axis < layer.ndim:
            raise ValueError(f"time axis: expected 0..{layer.ndim - 1} for {layer.name!r} "
                             f"({layer.ndim}D), got {axis}.")
        data = np.asarray(layer.data, dtype=np.float32)
        if not np.all(np.isfinite(data)):
            raise ValueError(f"series: {layer.name!r} holds NaN or infinite values. Replace them "
                             "(e.g. np.nan_to_num) first.")
        reference: str | int = self.reference_combo.value
        if reference == "frame":
            reference = int(self.frame_spin.value)
        spacing = [s for i, s in enumerate(np.asarray(layer.scale, float)) if i != axis]
        options = {"time_axis": axis, "spacing": spacing, "reference": reference,
                   "model": self.model_combo.value, "preset": self.preset_combo.value,
                   "device": self.device_combo.value}
        return data, options

    def run(self, *_: Any) -> None:
        """Start the series registration in a worker thread (Run button)."""
        if self.jobs.running:
            return
        try:
            data, options = self._collect()
        except (ValueError, TypeError) as error:
            self.status_label.value = "not started: see the notification"
            notify_error(str(error))
            return
        self._layer, self._axis = self.layer_combo.value, options["time_axis"]
        self.drift_plot.clear()
        self.metrics_label.setText("")
        self._rows: list[str] = []
        self.jobs.start(lambda stop: series_job(data, options, stop))
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status_label.value = "starting…"

    def cancel(self, *_: Any) -> None:
        """Stop within the current frame; the frames done are kept (Cancel button)."""
        if self.jobs.stop():
            self.status_label.value = "stopping…"

    def _on_event(self, event: Any) -> None:
        if isinstance(event, api.Started):
            self.progress.max = max(int(event.total_steps), 1)
        elif isinstance(event, api.Progress):
            self.progress.max = max(int(event.total), 1)
            self.progress.value = min(int(event.step), self.progress.max)
            self.status_label.value = event.message
        elif isinstance(event, api.Metrics):
            values = event.values
            self.drift_plot.add_point("drift", event.step - 1, values["drift_mm"])
            ncc = (f", NCC {values['ncc_before']:.3f} → {values['ncc_after']:.3f}"
                   if "ncc_after" in values else "")
            self._rows.append(f"frame {event.step - 1}: drift {values['drift_mm']:.3f}{ncc}")
            self.metrics_label.setText("\n".join(self._rows[-12:]))
        elif isinstance(event, (api.Finished, api.Stopped)):
            result = event.result
            if result is not None and result.frames_done:
                self._show(result)
            if isinstance(event, api.Stopped):
                done = 0 if result is None else result.frames_done
                total = "?" if result is None else result.total_frames
                self.status_label.value = f"cancelled: {done}/{total} frames kept"
            else:
                self.status_label.value = "done"
                if result.notes:  # fallbacks and affine starts, per frame: information
                    shown = "; ".join(result.notes[:3])
                    more = len(result.notes) - 3
                    notify_info(shown + (f"; and {more} more frame notes"
                                         if more > 0 else ""))
                if result.warnings:
                    notify_warning("; ".join(result.warnings))
        elif isinstance(event, JobFailed):
            self.status_label.value = "failed: see the notification"
            notify_error(event.message)

    def _show(self, result: Any) -> None:
        """The corrected stack as one layer, placed like the input (time axis where it was)."""
        self.result = result
        stack = np.moveaxis(result.corrected, 0, self._axis)
        name = f"{self._layer.name} corrected"
        metadata = {_layers.RESULT_KEY: {"role": "corrected", "source": self._layer.name}}
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = stack
            layer.reset_contrast_limits()
        else:
            layer = self.viewer.add_image(stack, name=name, metadata=metadata,
                                          **_layers.placement_like(self._layer))
        self.output_layer = layer

    def _on_finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
