"""The Train dock widget: train or fine-tune a registration network, watch its loss, use it.

The widget gathers a :class:`~deepreg_core.training.config.TrainConfig` from its settings
(:meth:`TrainWidget.build_config`), saves it as ``<output>/config.yaml`` (so
``deepreg-core train <output>/config.yaml`` reruns it) and runs :func:`._train_job.training_job`
in a ``thread_worker``. Events update the progress bar, the time left and the loss plot on the GUI
thread. Stop sets the core's ``StopToken`` (the core saves a checkpoint); Resume continues from the
output folder's latest checkpoint. When a run finishes or stops, the output folder becomes a model
folder (``config.yaml``, ``weights.safetensors``, ``card.md``) and the model is offered at once in
every open Register widget; by default it lives in the user model folder, so the zoo lists it after
a restart. Bad settings become ``show_error`` notifications, never tracebacks.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from qtpy.QtWidgets import QWidget
from superqt import QCollapsible

from deepreg_core import api
from napari_deepreg import _layers
from napari_deepreg._docks import docked, scrolling_body
from napari_deepreg._jobs import JobRunner, notify_error, notify_info
from napari_deepreg._loss_plot import LossPlot
from napari_deepreg._register_widget import is_spatial_image
from napari_deepreg._train_job import LAYER_DATA, Published, format_eta, training_job

if TYPE_CHECKING:
    import napari

SOURCES = ("synthetic pairs", "open image layers", "folder")
KINDS = {"affine": "affine", "deformable": "deformable", "global-local": "global_local"}
SIMILARITIES = ("lncc", "ncc", "mse", "mi")
NO_INIT = "none"
SYNTHETIC_DATA = {"velocity_std": 6.0}
"""Synthetic pairs drawn with larger deformations than the core's default (2 voxels): their
labels start near Dice 0.7 instead of 0.87-0.97, so the validation line shows what training
gains (and the network sees the deformations real pairs have)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _user_model_dir() -> Path:
    return api.user_model_dir()


class TrainWidget(QWidget):
    """Train a network on synthetic pairs, open layers or a folder, or fine-tune a zoo model."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.jobs = JobRunner(self, self._on_event, self._on_finished, self._on_error)
        self.model_path: Path | None = None  # the last published model folder
        self._clock: tuple[float, int] | None = None  # (time, step) of the first step of a run
        self._auto_output = ""

        def images(_widget: Any) -> list[tuple[str, Any]]:
            return [(ly.name, ly) for ly in self.viewer.layers if is_spatial_image(ly)]

        self.source_combo = ComboBox(label="data", choices=list(SOURCES), value=SOURCES[0])
        self.fixed_combo = ComboBox(label="fixed / atlas", choices=images, nullable=True)
        self.moving_select = Select(label="moving", choices=images)
        self.folder_edit = FileEdit(label="folder", mode="d")
        self.kind_combo = ComboBox(label="model type", choices=list(KINDS), value="deformable")
        self.ndim_combo = ComboBox(label="dimensionality", choices=["2D", "3D"], value="2D")
        self.features_edit = LineEdit(label="features", value="16, 32, 32, 32")
        self.init_combo = ComboBox(label="fine-tune from", choices=self._init_choices)
        self.similarity_combo = ComboBox(label="similarity", choices=list(SIMILARITIES),
                                         value="lncc")
        self.reg_spin = FloatSpinBox(label="regularisation", min=0.0, max=1e4, step=0.1, value=1.0)
        self.steps_spin = SpinBox(label="steps", min=1, max=10_000_000, value=1000)
        self.lr_spin = FloatSpinBox(label="learning rate", min=1e-6, max=1.0, step=1e-4,
                                    value=1e-3)
        self.lr_spin.native.setDecimals(6)
        self.batch_spin = SpinBox(label="batch size", min=1, max=1024, value=1)
        self.device_combo = ComboBox(label="device", choices=list(api.DEVICE_CHOICES), value="auto")
        self.shape_spin = SpinBox(label="working shape", min=8, max=1024, value=64)
        self.name_edit = LineEdit(label="model name", value="my-model")
        self.output_edit = FileEdit(label="output folder", mode="d")
        self.start_button = PushButton(text="Start")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.resume_button = PushButton(text="Resume")
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status_label = Label(value="")
        self.validation_label = Label(value="")  # validation Dice / folding when labels exist
        self.loss_plot = LossPlot()

        self.form = Container(widgets=[
            self.source_combo, self.fixed_combo, self.moving_select, self.folder_edit,
            self.kind_combo, self.ndim_combo, self.init_combo, self.steps_spin, self.name_edit,
        ])
        self.advanced = Container(widgets=[
            self.features_edit, self.similarity_combo, self.reg_spin, self.lr_spin,
            self.batch_spin, self.device_combo, self.shape_spin, self.output_edit,
        ])
        self.advanced_box = QCollapsible("More settings")
        self.advanced_box.addWidget(self.advanced.native)
        self.controls = Container(widgets=[
            Container(widgets=[self.start_button, self.stop_button, self.resume_button],
                      layout="horizontal", labels=False),
            self.progress, self.status_label, self.validation_label,
        ])
        layout = scrolling_body(self)
        for part in (self.form.native, self.advanced_box, self.controls.native, self.loss_plot):
            layout.addWidget(part)
        layout.addStretch(1)

        self.start_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self.resume_button.changed.connect(self.resume)
        self.source_combo.changed.connect(self._update_visible)
        self.init_combo.changed.connect(self._update_visible)
        self.name_edit.changed.connect(self._follow_name)
        self._follow_name()
        self.reset_choices()
        self._update_visible()

    # ------------------------------------------------------------------ choices
    def reset_choices(self, *_: Any) -> None:
        """Refresh the layer pickers and the zoo list (napari calls this when layers change)."""
        self.form.reset_choices()
        self.advanced.reset_choices()
        if self.fixed_combo.value is None:
            names = {ly.name: ly for ly in self.viewer.layers if is_spatial_image(ly)}
            if names:
                self.fixed_combo.value = names.get("fixed", next(iter(names.values())))

    def _init_choices(self, _widget: Any = None) -> list[str]:
        return [NO_INIT, *api.list_models()]

    def _update_visible(self, *_: Any) -> None:
        source = self.source_combo.value
        self.fixed_combo.visible = self.moving_select.visible = source == "open image layers"
        self.folder_edit.visible = source == "folder"
        scratch = self.init_combo.value == NO_INIT
        self.kind_combo.enabled = self.features_edit.enabled = scratch

    def _follow_name(self, *_: Any) -> None:
        """Keep the output folder at ``<user models>/<name>`` until the user picks another."""
        current = str(self.output_edit.value)
        if not self._auto_output or current in (self._auto_output, ".", ""):
            self._auto_output = str(_user_model_dir() / str(self.name_edit.value).strip())
            self.output_edit.value = self._auto_output

    # ------------------------------------------------------------------ settings
    def _data_images(self) -> tuple[Any, list[Any]]:
        """Copy the chosen fixed and moving layers into core Images (GUI thread)."""
        fixed_layer, moving_layers = self.fixed_combo.value, list(self.moving_select.value or [])
        fixed = _layers.layer_to_image(fixed_layer, "fixed")
        if not moving_layers:
            raise ValueError("moving: no layer chosen. Pick one or more moving image layers.")
        if fixed_layer in moving_layers:
            raise ValueError(f"{fixed_layer.name!r} is both fixed and moving; pick other layers.")
        moving = []
        for layer in moving_layers:
            image = _layers.layer_to_image(layer, f"moving {layer.name!r}")
            if image.ndim != fixed.ndim:
                raise ValueError(
                    f"fixed {fixed_layer.name!r} is {fixed.ndim}D {fixed.shape} but moving "
                    f"{layer.name!r} is {image.ndim}D {image.shape}; pick layers that are all 2D "
                    "or all 3D."
                )
            moving.append(image)
        return fixed, moving

    def _model_config(self, ndim: int) -> tuple[dict[str, Any], Path | None]:
        init = self.init_combo.value
        if init not in (None, NO_INIT):
            entry = api.model_entry(init)
            model = entry.config().model
            if model.ndim != ndim:
                raise ValueError(
                    f"fine-tune from {init!r}: a {model.ndim}D model cannot train on {ndim}D data. "
                    f"Pick a {ndim}D model, or {model.ndim}D data."
                )
            return model.model_dump(), entry.path / "weights.safetensors"
        try:
            features = [int(v) for v in str(self.features_edit.value).replace(",", " ").split()]
        except ValueError:
            features = []
        if not features or min(features) < 1:
            raise ValueError(
                f"features: expected positive channel widths such as '16, 32, 32', got "
                f"{self.features_edit.value!r}."
            )
        kind = KINDS[self.kind_combo.value]
        model = {"kind": kind, "ndim": ndim, "features": features}
        if kind == "affine":
            model["affine_features"] = features
        elif kind == "global_local":
            model["local_features"] = features
        return model, None

    def _check_output(self, output: Path) -> None:
        name = str(self.name_edit.value).strip()
        if not _NAME.match(name):
            raise ValueError(
                f"model name: expected letters, digits, '.', '_' or '-' (starting with a letter "
                f"or digit), got {name!r}."
            )
        trained = (output / "weights.safetensors").exists() or (output / "checkpoints").exists()
        if name in api.list_models() or trained:
            raise ValueError(
                f"model name {name!r}: a model or folder of that name already exists ({output}); "
                "choose another name (a user's model is never overwritten), or press Resume to "
                "continue its training."
            )
        try:
            output.mkdir(parents=True, exist_ok=True)
            probe = output / ".write-test"
            probe.write_text("", encoding="utf-8")
            probe.unlink()
        except OSError as error:
            raise ValueError(
                f"output folder {output} is not writable ({error.strerror or error}); pick "
                "another folder."
            ) from None

    def build_config(self) -> tuple[Any, tuple[Any, list[Any]] | None, dict[str, Any]]:
        """The TrainConfig of the current settings, the layer Images (or None), card settings.

        Raises ValueError with a message for the user when a setting is wrong.
        """
        from pydantic import ValidationError

        output = Path(str(self.output_edit.value)).expanduser()
        source = self.source_combo.value
        layers = None
        steps = int(self.steps_spin.value)
        data: dict[str, Any] = {"validation_count": 2}
        if source == "open image layers":
            layers = self._data_images()
            ndim = layers[0].ndim
            folder = output / LAYER_DATA
            data.update(source="folder", folder=str(folder), pairing="atlas",
                        atlas=str(folder / "fixed.nii.gz"),
                        validation_fraction=0.0 if len(layers[1]) < 3 else 0.2)
            described = f"layers {self.fixed_combo.value.name!r} + " + ", ".join(
                repr(ly.name) for ly in self.moving_select.value)
        elif source == "folder":
            folder = Path(str(self.folder_edit.value)).expanduser()
            count = sum(1 for p in folder.iterdir() if p.name.lower().endswith(tuple(api.SUPPORTED_SUFFIXES))) \
                if folder.is_dir() else 0
            if count < 2:
                raise ValueError(
                    f"folder: expected a folder with at least 2 NIfTI/TIFF/PNG images, got "
                    f"{count} in {folder}. Pick another folder."
                )
            ndim = 2 if self.ndim_combo.value == "2D" else 3
            data.update(source="folder", folder=str(folder))
            described = f"folder {folder}"
        else:
            ndim = 2 if self.ndim_combo.value == "2D" else 3
            data.update(source="synthetic", **SYNTHETIC_DATA)
            described = "synthetic pairs"
        data["shape"] = [int(self.shape_spin.value)] * ndim
        model, init_from = self._model_config(ndim)
        self._check_output(output)
        try:
            config = api.TrainConfig(
                model=model, data=data, init_from=init_from, device=self.device_combo.value,
                loss={"similarity": self.similarity_combo.value,
                      "regularization_weight": float(self.reg_spin.value)},
                optim={"steps": steps, "lr": float(self.lr_spin.value),
                       "batch_size": int(self.batch_spin.value)},
                validate_every=max(1, min(100, steps // 10)),
                checkpoint_every=max(1, min(500, steps // 4)),
                output_dir=output,
            )
        except ValidationError as error:
            raise ValueError(f"invalid settings: {error}") from None
        settings = {"data": described, "init": self.init_combo.value}
        return config, layers, settings

    # ------------------------------------------------------------------ run
    @property
    def worker(self) -> Any:
        """The running thread worker, or None."""
        return self.jobs.worker

    def start(self, *_: Any) -> None:
        """Check the settings, save ``<output>/config.yaml`` and start training (Start)."""
        if self.jobs.running:
            return
        try:
            config, layers, settings = self.build_config()
            api.save_config(config, Path(config.output_dir) / "config.yaml")
        except (ValueError, TypeError, OSError) as error:
            notify_error(str(error))
            return
        self.loss_plot.clear()
        self._launch(config, None, layers, settings)

    def resume(self, *_: Any) -> None:
        """Continue the run in the output folder from its latest checkpoint, to ``steps``."""
        if self.jobs.running:
            return

        output = Path(str(self.output_edit.value)).expanduser()
        try:
            config = api.load_config(output / "config.yaml")
            step = api.latest_checkpoint(output).name
            steps = int(self.steps_spin.value)
            config = config.model_copy(update={
                "optim": config.optim.model_copy(update={"steps": steps}),
                "device": self.device_combo.value,
            })
        except (ValueError, TypeError, OSError) as error:
            notify_error(f"resume: nothing to resume in {output}: {error}")
            return
        self.loss_plot.truncate(int(step.split("_")[-1]))
        init = Path(config.init_from).parent.name if config.init_from else NO_INIT
        self._launch(config, output, None, {"data": config.data.source, "init": init,
                                            "resumed": step})

    def _launch(self, config: Any, resume: Path | None, layers: Any,
                settings: dict[str, Any]) -> None:
        self._clock = None
        name = str(self.name_edit.value).strip()
        self.jobs.start(lambda stop: training_job(config, stop, resume=resume, layers=layers,
                                                  name=name, settings=settings))
        self._set_running(True)
        self.status_label.value = "starting…"

    def stop(self, *_: Any) -> None:
        """Ask the run to save a checkpoint and stop at its next step (Stop)."""
        if self.jobs.stop():
            self.status_label.value = "stopping (saving a checkpoint)…"

    def _set_running(self, running: bool) -> None:
        self.start_button.enabled = self.resume_button.enabled = not running
        self.stop_button.enabled = running

    def _on_error(self, error: Exception) -> None:
        self.status_label.value = "failed"

    def _on_event(self, event: Any) -> None:
        if isinstance(event, api.Started):
            self.progress.max = max(int(event.total_steps), 1)
            self.status_label.value = "training…"
        elif isinstance(event, api.Progress):
            self.progress.max = max(int(event.total), 1)
            self.progress.value = min(int(event.step), self.progress.max)
            now = time.monotonic()
            if self._clock is None:
                self._clock = (now, int(event.step))
            start, first = self._clock
            rate = (event.step - first) / (now - start) if now > start else 0.0
            left = format_eta((event.total - event.step) / rate) if rate > 0 else ""
            self.status_label.value = f"step {event.step}/{event.total} · {event.message} {left}"
        elif isinstance(event, api.Metrics):
            if "loss" in event.values:
                self.loss_plot.add_point(event.phase, event.step, event.values["loss"])
            if event.phase == "val":
                self.validation_label.value = validation_text(event.step, event.values)
        elif isinstance(event, api.Stopped):
            self.status_label.value = f"stopped at step {event.step}; checkpoint saved"
        elif isinstance(event, Published):
            self._publish(event)

    def _publish(self, event: Published) -> None:
        from napari_deepreg._register_widget import RegisterWidget

        self.model_path = event.path
        registers = docked(self.viewer, RegisterWidget)
        for widget in registers:  # offered, never switched to: the user's pick stays
            widget.add_model(event.name, str(event.path), select=False)
        self.init_combo.reset_choices()
        verb = "finished" if event.finished else "stopped"
        self.status_label.value = f"{verb} at step {event.step}; model saved to {event.path}"
        where = " and in Register's model list" if registers else ""
        notify_info(f"model {event.name!r} saved to {event.path}; it is in the zoo{where}.")

    def _on_finished(self) -> None:
        self._set_running(False)


def validation_text(step: int, values: dict) -> str:
    """One line of validation scores: loss, Dice and folding when the data has labels."""
    parts = [f"validation @ {step}: loss {values['loss']:.4g}"] if "loss" in values else []
    if "dice" in values:
        before = values.get("dice_before")
        parts.append(f"Dice {before:.3f} → {values['dice']:.3f}" if before is not None
                     else f"Dice {values['dice']:.3f}")
    if "folding_fraction" in values:
        parts.append(f"folding {100 * values['folding_fraction']:.3f} %")
    return " · ".join(parts)
