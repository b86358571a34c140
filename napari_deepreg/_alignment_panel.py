"""The Register widget's initial-alignment section: the moving layer's transform, used or not.

A mixin of :class:`~napari_deepreg._register_widget.RegisterWidget` (it expects ``viewer`` and
``moving_combo``). The section shows the moving layer's own napari transform relative to its base
placement (:mod:`._initial_alignment`), a switch to start from it (on by default) or from the
base placement, **Reset** (the layer goes back), and for 3D layers a nudge panel (shift, rotate
about the image centre, scale) that moves the layer live through its ``affine``.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, Container, FloatSpinBox, PushButton
from qtpy.QtWidgets import QLabel
from superqt import QCollapsible

from deepreg_core import api
from napari_deepreg import _initial_alignment as initial
from napari_deepreg import _layers

PLACEMENT_EVENTS = ("scale", "translate", "rotate", "shear", "affine")


class AlignmentPanel:
    """Manual initial alignment of the Register widget."""

    def _build_alignment(self) -> QCollapsible:
        self.initial_check = CheckBox(text="start from the moving layer's transform", value=True)
        self.initial_label = QLabel("")
        self.initial_label.setWordWrap(True)
        self.reset_button = PushButton(text="Reset the moving layer")
        self.nudge_shift = [FloatSpinBox(label=f"shift {axis}", min=-1000.0, max=1000.0,
                                         step=0.5, value=0.0) for axis in ("z", "y", "x")]
        self.nudge_rotate = [FloatSpinBox(label=f"rotate about {axis} (°)", min=-180.0,
                                          max=180.0, step=1.0, value=0.0)
                             for axis in ("z", "y", "x")]
        self.nudge_scale = FloatSpinBox(label="scale", min=0.2, max=5.0, step=0.01, value=1.0)
        self.nudge = Container(widgets=[*self.nudge_shift, *self.nudge_rotate, self.nudge_scale])
        self.alignment = Container(widgets=[self.initial_check, self.reset_button])
        box = QCollapsible("Initial alignment (moving layer's transform)")
        box.addWidget(self.alignment.native)
        box.addWidget(self.initial_label)
        box.addWidget(self.nudge.native)
        self._watched: Any = None
        self.reset_button.changed.connect(self.reset_alignment)
        self.initial_check.changed.connect(self._show_initial)
        for spin in self.nudge:
            spin.changed.connect(self._nudged)
        self.moving_combo.changed.connect(self._watch_moving)
        return box

    def _watch_moving(self, *_: Any) -> None:
        """Follow the chosen moving layer's placement events."""
        if self._watched is not None:
            for name in PLACEMENT_EVENTS:
                getattr(self._watched.events, name).disconnect(self._show_initial)
        layer = self._watched = self.moving_combo.value
        if layer is not None:
            initial.remember_base(layer)
            for name in PLACEMENT_EVENTS:
                getattr(layer.events, name).connect(self._show_initial)
        self._set_nudge(0.0, 1.0)
        self.nudge.enabled = layer is not None and layer.ndim == 3
        self._show_initial()

    def _show_initial(self, *_: Any) -> None:
        layer = self.moving_combo.value
        if layer is None:
            self.initial_label.setText("")
            return
        used = "used" if self.initial_check.value else "not used (the base placement is)"
        self.initial_label.setText(
            f"{initial.describe(initial.initial_transform(layer))}; {used}")

    def _nudged(self, *_: Any) -> None:
        layer = self.moving_combo.value
        if layer is None or layer.ndim != 3 or getattr(self, "_nudging", False):
            return
        matrix = initial.nudge_matrix([s.value for s in self.nudge_shift],
                                      [s.value for s in self.nudge_rotate],
                                      self.nudge_scale.value, initial.centre_of(layer))
        initial.apply_nudge(layer, matrix)

    def _set_nudge(self, value: float, scale: float) -> None:
        self._nudging = True
        try:
            for spin in (*self.nudge_shift, *self.nudge_rotate):
                spin.value = value
            self.nudge_scale.value = scale
        finally:
            self._nudging = False

    def reset_alignment(self, *_: Any) -> None:
        """Put the moving layer back where it was before the user moved it (Reset button)."""
        layer = self.moving_combo.value
        if layer is None:
            return
        self._set_nudge(0.0, 1.0)
        initial.reset(layer)
        self._show_initial()

    def _moving_to_register(self, layer: Any, shown: Any) -> Any:
        """The moving image to register: as shown, or at its base placement when switched off."""
        if self.initial_check.value:
            return shown
        return api.Image(shown.data, initial.base_matrix(layer), shown.meta)

    def _moving_matrix(self, layer: Any) -> Any:
        """The moving layer's world matrix to register from: as shown, or its base placement."""
        if self.initial_check.value:
            return _layers.layer_world_matrix(layer)
        return initial.base_matrix(layer)
