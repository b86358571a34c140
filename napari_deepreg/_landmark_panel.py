"""The Register widget's landmark section: Points layers, pairing mode, hold-out, re-runs.

A mixin of :class:`~napari_deepreg._register_widget.RegisterWidget` (it expects ``viewer``,
``fixed_combo``, ``model_combo``, ``jobs``, ``run`` and ``status_label``). With a
``landmarks-*`` model the fixed and moving Points layers are fitted (:mod:`._landmarks`); with
another model they give the TRE. **New landmark layers** adds an empty pair of Points layers and
starts the pairing mode (:mod:`._pairing`); each change of the pairs re-runs the registration
after a short quiet time when "re-run" is ticked (a landmark-only model then shows the fit
alone, which is instant; **Run** adds the preset's refinement).
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, PushButton, SpinBox
from superqt import QCollapsible

from napari_deepreg import _landmarks
from napari_deepreg._pairing import PairingMode

NEW_NAMES = ("fixed landmarks", "moving landmarks")


class LandmarkPanel:
    """Landmark options of the Register widget."""

    def _build_landmarks(self, layers_of: Any) -> QCollapsible:
        self.fixed_points_combo = ComboBox(label="fixed points", choices=layers_of("Points"),
                                           nullable=True)
        self.moving_points_combo = ComboBox(label="moving points", choices=layers_of("Points"),
                                            nullable=True)
        self.holdout_spin = SpinBox(label="hold out", min=0, max=100, value=0,
                                    tooltip="pairs left out of a landmark fit; their error is "
                                            "reported as held-out TRE")
        self.new_landmarks_button = PushButton(text="New landmark layers (pairing mode)")
        self.pairing_check = CheckBox(text="pairing mode: click fixed, then moving", value=False)
        self.rerun_check = CheckBox(text="re-run when the pairs change", value=True)
        self.pairing = PairingMode(self.viewer, self._pairs_changed)
        self._rerun_pending = False
        self.landmarks = Container(widgets=[
            self.fixed_points_combo, self.moving_points_combo, self.holdout_spin,
            self.new_landmarks_button, self.pairing_check, self.rerun_check,
        ])
        box = QCollapsible("Landmarks (fit, TRE)")
        box.addWidget(self.landmarks.native)
        self.new_landmarks_button.changed.connect(self.new_landmark_layers)
        self.pairing_check.changed.connect(self._pairing_toggled)
        return box

    def new_landmark_layers(self, *_: Any) -> tuple[Any, Any]:
        """Add an empty fixed and moving Points layer, pick them and start the pairing mode."""
        layer = self.fixed_combo.value
        ndim = layer.ndim if layer is not None else 2
        made = []
        for name in NEW_NAMES:
            if name in self.viewer.layers:
                made.append(self.viewer.layers[name])
            else:
                made.append(self.viewer.add_points(ndim=ndim, name=name, size=4))
        self.landmarks.reset_choices()
        self.fixed_points_combo.value, self.moving_points_combo.value = made
        if self.pairing_check.value:
            self._pairing_toggled(True)
        else:
            self.pairing_check.value = True
        return made[0], made[1]

    def _pairing_toggled(self, on: bool) -> None:
        fixed, moving = self.fixed_points_combo.value, self.moving_points_combo.value
        if not on:
            self.pairing.stop()
            return
        if fixed is None or moving is None or fixed is moving:
            self.pairing_check.value = False
            self.status_label.value = "pairing: pick a fixed and a moving Points layer first"
            return
        self.pairing.start(fixed, moving)
        self.status_label.value = "pairing: click a point in the fixed image, then its partner"

    def _pairs_changed(self) -> None:
        """The pairs changed (debounced): re-run with a landmark model, if ticked."""
        if not self.rerun_check.value or _landmarks.landmark_kind(self.model_combo.value) is None:
            return
        if self.jobs.running:
            self._rerun_pending = True
            return
        self.run(quiet=True)

    def _rerun_if_pending(self) -> None:
        if self._rerun_pending and not self.jobs.running:
            self._rerun_pending = False
            self.run(quiet=True)

    def _landmark_options(self, fixed: Any, moving: Any, moving_shown: Any, model: Any,
                          quiet: bool) -> dict[str, Any]:
        """Points options of ``register_iter``: pairs in voxel indices, hold-out, fit checks.

        ``moving_shown`` is the moving image as napari shows it (the world the points were
        clicked in); ``moving`` the one registered (without the layer's transform when the
        initial alignment is switched off).
        """
        from napari_deepreg import _layers

        fixed_layer, moving_layer = self.fixed_points_combo.value, self.moving_points_combo.value
        kind = _landmarks.landmark_kind(model)
        if kind and (fixed_layer is None or moving_layer is None):
            raise ValueError(
                f"model {model!r} fits landmarks: pick a fixed and a moving Points layer in "
                "'Landmarks', or press 'New landmark layers' and click pairs."
            )
        if fixed_layer is not None and moving_layer is None:
            raise ValueError("fixed points need moving points too: TRE compares pairs of points.")
        if moving_layer is None:
            return {}
        if fixed_layer is None:  # moving points only: carried to the fixed space
            return {"moving_points": _layers.points_to_voxels(moving_layer, moving_shown,
                                                              "moving points")}
        fp, mp = _landmarks.paired_voxels(fixed_layer, moving_layer, fixed, moving_shown)
        options: dict[str, Any] = {"fixed_points": fp, "moving_points": mp}
        if kind:
            holdout = int(self.holdout_spin.value)
            _landmarks.check_fit(kind, fp, mp, fixed, moving, holdout)
            options["landmark_holdout"] = holdout
            if quiet and _landmarks.landmark_only(model):
                options["refine_steps"] = 0  # the fit alone while the user clicks: instant
        return options
