"""The Register dock widget: pick a fixed and a moving layer, a model, run, look at the result.

The widget only adapts the core's generator (``deepreg_core.inference.register_iter``): layer data
are copied on the GUI thread, the job runs in a ``thread_worker`` (:mod:`._register_job`) and its
events update the progress bar; the result arrives as layers named after the moving layer
(:mod:`._results`). Cancel sets the core's ``StopToken``. Errors become
``napari.utils.notifications.show_error`` messages, never traceback dialogs. Sub-widgets are
attributes (``fixed_combo``, ``run_button``...) so tests can set values and press buttons; the
actions behind buttons are methods (``run``, ``cancel``, ``apply_to_layer``, ``export_warped``,
``export_transform``, ``clear_results``, ``inspect_field``) that tests call with paths instead
of file dialogs.

The user's own layers are left as they were unless "overlay" is ticked (the fixed layer tinted
green, the moving layer hidden); "Clear results" removes every output layer of this widget and
gives the user's layers back their colormap and visibility.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QTextBrowser, QWidget
from superqt import QCollapsible

from deepreg_core import api
from napari_deepreg import _landmarks, _layers
from napari_deepreg._alignment_panel import AlignmentPanel
from napari_deepreg._channel_panel import ChannelPanel
from napari_deepreg._docks import docked, scrolling_body
from napari_deepreg._jobs import JobRunner, notify_error, notify_info, notify_warning
from napari_deepreg._landmark_panel import LandmarkPanel
from napari_deepreg._register_actions import ResultActions
from napari_deepreg._register_job import JobFailed, Rendered, format_metrics, registration_job

if TYPE_CHECKING:
    import napari

# "auto": the network measured best for the chosen preset (deepreg_core.zoo.AUTO_BY_PRESET)
MODEL_KINDS = ("auto", "deformable", "affine", "affine+deformable", "global-local")


PRESET_HELP = {
    "auto": "networks, then refinement that stops when it stops paying (default)",
    "fast": "networks only: one forward pass (kept when it does not match worse)",
    "accurate": "a larger refinement budget and a stricter stop",
}


OVERLAY_TEXT = "green/magenta overlay (tints fixed, hides moving; Clear restores)"


def constant_image_error(image: Any, role: str, name: str) -> str | None:
    """The message for an image with one value everywhere (nothing to align), else None.

    Examples
    --------
    >>> from deepreg_core.api import Image
    >>> constant_image_error(Image.from_array(np.zeros((4, 4))), "moving", "m")
    "moving 'm' is constant (every voxel is 0): there is nothing to align. Pick an image with structure."
    """
    data = image.data
    low, high = float(np.min(data)), float(np.max(data))
    if high > low:
        return None
    return (f"{role} {name!r} is constant (every voxel is {low:g}): there is nothing to align. "
            "Pick an image with structure.")


def is_spatial_image(layer: Any) -> bool:
    """A 2D or 3D image layer that is not a displacement field opened by the Inspect widget."""
    return (layer.__class__.__name__ == "Image" and layer.ndim in (2, 3)
            and _layers.FIELD_KEY not in layer.metadata)


class RegisterWidget(ResultActions, LandmarkPanel, AlignmentPanel, ChannelPanel, QWidget):
    """Register a moving image layer to a fixed one with a pretrained model (+ refinement)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.result: Any = None
        self.output_layers: dict[str, Any] = {}
        self.jobs = JobRunner(self, self._on_event, self._on_finished)
        self._extra_models: dict[str, Any] = {}
        self._source = ""  # the moving layer name the current result belongs to
        self._place: dict[str, Any] = {}
        self._inverse: Any = None  # the inverse field, computed when points are first warped
        self._pending: tuple[Any, ...] = ()  # (fixed layer, moving layer) of the running job
        self._sources: set[str] = set()  # moving-layer names this widget made output layers for
        self._restore: dict[Any, tuple[Any, bool]] = {}  # user layer -> (colormap, visible)
        self._channels: dict[str, Any] | None = None  # {"channel", "axis"} of a channel job

        def layers_of(*kinds: str):
            def choices(_widget: Any) -> list[tuple[str, Any]]:
                layers = self.viewer.layers
                return [(ly.name, ly) for ly in layers if ly.__class__.__name__ in kinds]
            return choices

        def images(_widget: Any) -> list[tuple[str, Any]]:
            return [(ly.name, ly) for ly in self.viewer.layers if self._is_input(ly)]

        self.channels_box = self._build_channels()

        self.fixed_combo = ComboBox(label="fixed", choices=images, nullable=True)
        self.moving_combo = ComboBox(label="moving", choices=images, nullable=True)
        self.model_combo = ComboBox(label="model", choices=self._model_choices)
        self.device_combo = ComboBox(label="device", choices=list(api.DEVICE_CHOICES), value="auto")
        self.preset_combo = ComboBox(label="preset", choices=list(PRESET_HELP), value="auto",
                                     tooltip="\n".join(f"{k}: {v}" for k, v in PRESET_HELP.items()))
        self.refine_check = CheckBox(text="fixed refinement steps (instead of the preset's)",
                                     value=False)
        self.steps_spin = SpinBox(label="steps", min=0, max=10_000, value=50)
        self.refine_affine_check = CheckBox(text="affine first (off for pre-aligned pairs)",
                                            value=True)
        self.reg_default_check = CheckBox(text="default regularisation", value=True)
        self.reg_spin = FloatSpinBox(label="regularisation", min=0.0, max=1000.0, step=0.1,
                                     value=0.3)
        self.fixed_labels_combo = ComboBox(label="fixed labels", choices=layers_of("Labels"),
                                           nullable=True)
        self.moving_labels_combo = ComboBox(label="moving labels", choices=layers_of("Labels"),
                                            nullable=True)
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status_label = Label(value="")
        self.metrics_label = QLabel("")
        self.metrics_label.setMinimumHeight(5 * self.metrics_label.fontMetrics().lineSpacing())
        self.metrics_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        from napari_deepreg._results import KEEP_CHOICES

        self.keep_combo = ComboBox(label="keep", choices=list(KEEP_CHOICES),
                                   value="warped + grid",
                                   tooltip="Which result layers a run adds (QA maps start hidden)")
        self.overlay_check = CheckBox(text=OVERLAY_TEXT, value=True)
        self.clear_button = PushButton(text="Clear results")
        self.inspect_button = PushButton(text="Inspect the field", enabled=False)
        self.apply_combo = ComboBox(label="apply to",
                                    choices=layers_of("Image", "Labels", "Points"), nullable=True)
        self.apply_button = PushButton(text="Apply transform to layer", enabled=False)
        self.export_warped_button = PushButton(text="Save warped image…", enabled=False)
        self.export_transform_button = PushButton(text="Save transform…", enabled=False)

        self.form = Container(widgets=[
            self.fixed_combo, self.moving_combo, self.model_combo, self.device_combo,
            self.preset_combo,
        ])
        self.refinement = Container(widgets=[
            self.refine_check, self.steps_spin, self.refine_affine_check, self.reg_default_check,
            self.reg_spin,
        ])
        self.refinement_box = QCollapsible("Refinement options")
        self.refinement_box.addWidget(self.refinement.native)
        self.outputs = Container(widgets=[self.keep_combo, self.overlay_check, self.clear_button])
        self.outputs_box = QCollapsible("Output layers")
        self.outputs_box.addWidget(self.outputs.native)
        self.card_text = QTextBrowser()
        self.card_text.setMinimumHeight(160)
        self.card = QCollapsible("Model card")
        self.card.addWidget(self.card_text)
        self.evaluation = Container(widgets=[self.fixed_labels_combo, self.moving_labels_combo])
        self.evaluation_box = QCollapsible("Labels (Dice)")
        self.evaluation_box.addWidget(self.evaluation.native)
        self.landmarks_box = self._build_landmarks(layers_of)
        self.alignment_box = self._build_alignment()
        self.controls = Container(widgets=[
            Container(widgets=[self.run_button, self.cancel_button], layout="horizontal",
                      labels=False),
            self.progress, self.status_label,
        ])
        self.actions = Container(widgets=[
            self.inspect_button, self.apply_combo, self.apply_button,
            Container(widgets=[self.export_warped_button, self.export_transform_button],
                      layout="horizontal", labels=False),
        ])
        layout = scrolling_body(self)
        parts = (self.form.native, self.refinement_box, self.card, self.channels_box,
                 self.landmarks_box, self.alignment_box, self.evaluation_box, self.outputs_box,
                 self.controls.native, self.metrics_label, self.actions.native)
        for part in parts:
            layout.addWidget(part)
        layout.addStretch(1)

        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.apply_button.changed.connect(self._apply_clicked)
        self.export_warped_button.changed.connect(self._export_warped_clicked)
        self.export_transform_button.changed.connect(self._export_transform_clicked)
        self.clear_button.changed.connect(self.clear_results)
        self.inspect_button.changed.connect(self._inspect_clicked)
        self.overlay_check.changed.connect(self._overlay_changed)
        self.model_combo.changed.connect(self._update_card)
        self.fixed_combo.changed.connect(self._fixed_changed)
        self.fixed_combo.changed.connect(self._show_channels)
        self.moving_combo.changed.connect(self._show_channels)
        self.refine_check.changed.connect(self._update_enabled)
        self.preset_combo.changed.connect(self._update_enabled)
        self.preset_combo.changed.connect(self._update_card)  # "auto" depends on the preset
        self.steps_spin.changed.connect(self._update_enabled)
        self.reg_default_check.changed.connect(self._update_enabled)
        self.viewer.dims.events.order.connect(self._refresh_grid)
        self.viewer.dims.events.ndisplay.connect(self._refresh_grid)
        self.reset_choices()
        self._watch_moving()
        self._show_channels()
        self._update_enabled()

    # ------------------------------------------------------------------ choices
    def reset_choices(self, *_: Any) -> None:
        """Refresh every layer picker (napari calls this when layers change)."""
        for container in (self.form, self.evaluation, self.landmarks, self.actions):
            container.reset_choices()
        self._pick_default_pair()
        self._pick_default_labels()

    def _pick_default_pair(self) -> None:
        images = [ly for ly in self.viewer.layers
                  if self._is_input(ly) and _layers.RESULT_KEY not in ly.metadata]
        by_name = {ly.name: ly for ly in images}
        if self.fixed_combo.value is None and images:
            self.fixed_combo.value = by_name.get("fixed", images[0])
        if self.moving_combo.value is None and len(images) > 1:
            others = [ly for ly in images if ly != self.fixed_combo.value]
            self.moving_combo.value = by_name.get("moving", others[0])

    def _is_input(self, layer: Any) -> bool:
        """A layer offered as fixed or moving: 2D/3D, or 4D with a channel axis."""
        return is_spatial_image(layer) or self.offers_channels(layer)

    def _pick_default_labels(self) -> None:
        """Pick layers named "fixed labels" / "moving labels" for Dice when none is chosen."""
        for combo, name in ((self.fixed_labels_combo, "fixed labels"),
                            (self.moving_labels_combo, "moving labels")):
            if combo.value is None and name in self.viewer.layers:
                layer = self.viewer.layers[name]
                if layer.__class__.__name__ == "Labels":
                    combo.value = layer

    def _fixed_changed(self, *_: Any) -> None:
        self.model_combo.reset_choices()
        self._update_card()

    def _model_choices(self, _widget: Any = None) -> list[str]:
        """The models that can register the chosen fixed layer's dimensionality."""
        layer = self.fixed_combo.value if hasattr(self, "moving_combo") else None
        ndim = self.spatial_ndim(layer) if layer is not None else None
        zoo = api.list_models(ndim)
        kinds = [kind for kind in MODEL_KINDS if ndim is None or all(
            api.resolve_model_name(part, ndim) in zoo for part in kind.split("+"))]
        names = kinds + _landmarks.landmark_models("deformable" in kinds)
        names += [n for n in zoo if n not in MODEL_KINDS]
        extra = [n for n, model in self._extra_models.items()
                 if n not in names and (ndim is None or _model_ndim(model) in (None, ndim))]
        return names + extra

    def add_model(self, name: str, model: Any, select: bool = True) -> None:
        """Offer a model built in this session (e.g. by the Train widget) under ``name``.

        ``model`` is a network or the path of a model folder; ``select=False`` adds it to the
        list without changing the model the user picked.
        """
        self._extra_models[name] = model
        current = self.model_combo.value
        self.model_combo.reset_choices()
        if select:
            self.model_combo.value = name
        elif current in self.model_combo.choices:
            self.model_combo.value = current

    def _update_card(self, *_: Any) -> None:
        name = self.model_combo.value
        model = self._extra_models.get(name)
        if isinstance(model, (str, Path)) and (Path(model) / "card.md").is_file():
            text = api.model_card(str(model))
        elif name in self._extra_models:
            text = f"# {name}\nA network built in this session (not saved as a model folder)."
        elif _landmarks.landmark_only(name):
            text = (f"# {name}\nFits a {_landmarks.landmark_kind(name)} transform to the point "
                    "pairs of the Landmarks section (no network); the preset's refinement then "
                    "matches the images while a landmark term keeps the pairs together.")
        else:
            layer = self.fixed_combo.value
            ndim = self.spatial_ndim(layer) if layer is not None else 2
            first = str(name).split("+")[-1]
            preset = self.preset_combo.value if hasattr(self, "preset_combo") else None
            key = api.resolve_model_name(first, ndim, preset)
            try:
                text = api.model_card(key)
                if first == "auto":
                    text = (f"*auto* with the *{preset}* preset runs **{key}** (the network "
                            f"measured best for that preset).\n\n{text}")
            except (ValueError, OSError):
                text = (f"# {name}\nNo model card found for `{key}`: this model is not installed "
                        "in the zoo yet.")
        self.card_text.setMarkdown(text)

    def _update_enabled(self, *_: Any) -> None:
        fixed_steps = bool(self.refine_check.value)
        self.steps_spin.enabled = fixed_steps
        refine = fixed_steps and self.steps_spin.value > 0 or (
            not fixed_steps and self.preset_combo.value != "fast")
        self.refine_affine_check.enabled = refine
        self.reg_default_check.enabled = refine
        self.reg_spin.enabled = refine and not self.reg_default_check.value

    # ------------------------------------------------------------------ run
    def _collect(self, quiet: bool = False) -> tuple[Any, Any, dict[str, Any]]:
        """Copy the chosen layers into core Images (GUI thread) and gather the options.

        ``quiet``: a re-run because landmark pairs changed (a landmark-only fit skips the
        refinement).
        """
        fixed_layer, moving_layer = self.fixed_combo.value, self.moving_combo.value
        if fixed_layer is not None and fixed_layer == moving_layer:
            raise ValueError("fixed and moving are the same layer; pick two different images.")
        split = self._collect_channels(fixed_layer, moving_layer, self._moving_matrix)
        if split is None:
            fixed = _layers.layer_to_image(fixed_layer, "fixed")
            moving_shown = _layers.layer_to_image(moving_layer, "moving")
            moving = self._moving_to_register(moving_layer, moving_shown)
            inputs: tuple[Any, Any] = (fixed, moving)
            self._channels = None
        else:  # checks and landmarks on the registered channel; the job gets every channel
            inputs = split[:2]
            fixed, moving, self._channels = split[2], split[3], split[4]
            moving_shown = moving
        if fixed.ndim != moving.ndim:
            raise ValueError(
                f"fixed {fixed_layer.name!r} is {fixed.ndim}D {fixed.shape} but moving "
                f"{moving_layer.name!r} is {moving.ndim}D {moving.shape}; pick two 2D or two 3D "
                "images."
            )
        for image, role, layer in ((fixed, "fixed", fixed_layer), (moving, "moving", moving_layer)):
            message = constant_image_error(image, role, layer.name)
            if message:
                raise ValueError(message)
        model = self.model_combo.value
        if model is None:
            raise ValueError("model: no model chosen. Pick one from the list.")
        options: dict[str, Any] = {
            "model": self._extra_models.get(model, model),
            "device": self.device_combo.value,
            "preset": self.preset_combo.value,
            "refine_steps": int(self.steps_spin.value) if self.refine_check.value else None,
            "refine_affine": bool(self.refine_affine_check.value),
            "regularization": None if self.reg_default_check.value else float(self.reg_spin.value),
        }
        if self.fixed_labels_combo.value is not None:
            options["fixed_labels"] = _layers.layer_to_image(
                self.fixed_labels_combo.value, "fixed labels", kind="labels")
        if self.moving_labels_combo.value is not None:
            options["moving_labels"] = _layers.layer_to_image(
                self.moving_labels_combo.value, "moving labels", kind="labels")
        options.update(self._landmark_options(fixed, moving, moving_shown, options["model"],
                                              quiet))
        return (*inputs, options)

    @property
    def worker(self) -> Any:
        """The running thread worker, or None."""
        return self.jobs.worker

    def run(self, *_: Any, quiet: bool = False) -> None:
        """Start a registration in a worker thread (Run button).

        ``quiet``: a re-run because landmark pairs changed; a problem (e.g. a pair not yet
        complete) is said in the status line, not as a notification.
        """
        if self.jobs.running:
            return
        try:
            fixed, moving, options = self._collect(quiet)
        except (ValueError, TypeError) as error:
            self.metrics_label.setText("")  # never show the last run's numbers next to this one
            if quiet:
                self.status_label.value = f"waiting for pairs: {error}"
                return
            self.status_label.value = "not started: see the notification"
            notify_error(str(error))
            return
        self.metrics_label.setText("")
        self.progress.value = 0
        self._pending = (self.fixed_combo.value, self.moving_combo.value, self._channels)
        channels = self._channels
        ndim = (fixed[0] if isinstance(fixed, list) else fixed).ndim
        displayed = self._displayed_axes(ndim)
        self.jobs.start(lambda stop: registration_job(fixed, moving, options, stop, displayed,
                                                      channels))
        self._set_running(True)
        self.status_label.value = "starting…"

    def cancel(self, *_: Any) -> None:
        """Ask the running job to stop at its next step (Cancel button)."""
        if self.jobs.stop():
            self.status_label.value = "stopping…"

    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.cancel_button.enabled = running
        has_result = self.result is not None and not running
        for button in (self.apply_button, self.export_warped_button, self.export_transform_button,
                       self.inspect_button):
            button.enabled = has_result

    def _on_event(self, event: Any) -> None:
        if isinstance(event, api.Started):
            self.progress.max = max(int(event.total_steps), 1)
            self.progress.value = 0
            self.status_label.value = f"running {event.config.get('model', '')}"
        elif isinstance(event, api.Progress):
            self.progress.max = max(int(event.total), 1)
            self.progress.value = min(int(event.step), self.progress.max)
            self.status_label.value = event.message
        elif isinstance(event, api.Stopped):
            done = round(100 * self.progress.value / max(self.progress.max, 1))
            self.status_label.value = f"cancelled at {done} %; no layer was changed"
        elif isinstance(event, JobFailed):
            self.status_label.value = "failed: see the notification"
            self.metrics_label.setText("")
            self.progress.value = 0
            notify_error(event.message)
        elif isinstance(event, Rendered):
            self._show_result(event)

    def _on_finished(self) -> None:
        self._set_running(False)
        self._rerun_if_pending()

    # ------------------------------------------------------------------ result
    def _show_result(self, event: Rendered) -> None:
        fixed_layer, moving_layer, channels = self._pending
        extra = []
        if channels is not None and event.channels is not None:
            extra = [self._channel_stack_spec(event.channels, channels["axis"], fixed_layer,
                                              moving_layer.name)]
        self._present(event.result, event.outputs, fixed_layer, moving_layer, extra)

    def show_result(self, result: Any, fixed_layer: Any, moving_layer: Any) -> dict[str, Any]:
        """Show a ``RegistrationResult`` computed elsewhere (CLI, script) as if run here.

        ``fixed_layer`` places the output layers; ``moving_layer`` names them. Returns the output
        layers by role.
        """
        from napari_deepreg._results import render_outputs

        outputs = render_outputs(result, self._displayed_axes(result.fixed.ndim))
        self._present(result, outputs, fixed_layer, moving_layer)
        return self.output_layers

    def _present(self, result: Any, outputs: dict[str, Any], fixed_layer: Any,
                 moving_layer: Any, replace: list[Any] = ()) -> None:
        """Show a result; ``replace`` holds specs that stand in for those of their role (the
        warped image of every channel)."""
        from napari_deepreg._inspect_widget import InspectWidget
        from napari_deepreg._results import (
            KEEP_CHOICES,
            registration_specs,
            remove_outputs,
            show_specs,
        )

        source = moving_layer.name
        self.result, self._source, self._inverse = result, source, None
        self._place = self._spatial_place(fixed_layer)
        keep = self.keep_combo.value
        specs = registration_specs(result, outputs, source, self._place, keep)
        by_role = {spec.role: spec for spec in replace}
        specs = [by_role.get(spec.role, spec) for spec in specs]
        remove_outputs(self.viewer, source, (*KEEP_CHOICES[keep], "warped labels",
                                             "warped points", "applied"))
        self.output_layers = show_specs(self.viewer, specs, source)
        self._sources.add(source)
        self._user_layers = (fixed_layer, moving_layer)
        if self.overlay_check.value:
            self._apply_overlay()
        self.metrics_label.setText(format_metrics(result.metrics, result.model_name,
                                                  result.device))
        self.status_label.value = "done"
        for inspect in docked(self.viewer, InspectWidget):
            inspect.offer_result(source, result)

        if result.notes:  # a fallback or an affine start the preset took: information
            notify_info(f"{moving_layer.name}: " + "; ".join(result.notes))
        if result.warnings:  # the guard: say it where the user looks, not only in the read-out
            notify_warning(f"{moving_layer.name}: " + "; ".join(result.warnings))
            self.status_label.value = "done, with a warning (see the notification)"
        self._set_running(self.jobs.running)

    def _displayed_axes(self, ndim: int) -> tuple[int, ...]:
        return _layers.displayed_axes(self.viewer, ndim)

    def _refresh_grid(self, *_: Any) -> None:
        """Re-render a 3D grid for the axes now on screen (slice plane or 3D lattice)."""
        from napari_deepreg._results import grid_picture, grid_spec, show_specs

        layer = self.output_layers.get("grid")
        if self.result is None or layer is None or layer not in self.viewer.layers:
            return
        if self.result.fixed.ndim == 3:
            picture = grid_picture(self.result.displacement, self._displayed_axes(3))
            spec = grid_spec(picture, layer.name, self._place, self.result.fixed.shape)
            spec.kwargs["metadata"] = layer.metadata
            self.output_layers["grid"] = show_specs(self.viewer, [spec], self._source)["grid"]


def _model_ndim(model: Any) -> int | None:
    """The dimensionality a model folder or network works on (None when it does not say)."""
    if isinstance(model, (str, Path)):
        try:
            return int(api.model_entry(str(model)).config().model.ndim)
        except (ValueError, OSError):
            return None
    ndim = getattr(getattr(model, "config", None), "ndim", None)
    return int(ndim) if ndim is not None else getattr(model, "ndim", None)
