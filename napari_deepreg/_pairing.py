"""The pairing mode: click alternately in the fixed and the moving Points layer.

While it is on, a point added to one landmark layer gets the pair number its partner will share
(the ``label`` feature, shown as text beside the point), and the other layer becomes the active
one in add mode, so the next click lands there. It works on whatever napari shows: a 2D image, or
the current slice of a 3D one (napari adds the point at the slice's position). Deleting a point
deletes its partner (the pair goes); moving a point keeps its pair. Every change calls
``on_change`` after a short quiet time (:data:`DEBOUNCE_MS`), so a re-run waits for the user to
stop dragging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QTimer

from napari_deepreg import _landmarks

DEBOUNCE_MS = 400
COLOURS = ("lime", "magenta")  # fixed, moving: the overlay's colours


class PairingMode:
    """Alternate clicks between two Points layers; report pair changes, debounced.

    Parameters
    ----------
    viewer : napari.Viewer
    on_change : callable
        Called (GUI thread, no argument) once the pairs stopped changing for ``DEBOUNCE_MS``.
    """

    def __init__(self, viewer: Any, on_change: Callable[[], None]) -> None:
        self.viewer = viewer
        self.layers: tuple[Any, ...] = ()
        self.active = False
        self._removing: dict[int, list[str]] = {}
        self._busy = False
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(on_change)

    def start(self, fixed_points: Any, moving_points: Any) -> None:
        """Pair ``fixed_points`` with ``moving_points``: label them, watch them, click fixed."""
        self.stop()
        # the widget may hold napari's public-only proxies; events come from the layers
        self.layers = tuple(getattr(ly, "__wrapped__", ly) for ly in (fixed_points, moving_points))
        fixed_points, moving_points = self.layers
        for layer, colour in zip(self.layers, COLOURS):
            _landmarks.style_pairs(layer, colour)
            layer.events.data.connect(self._on_data)
        self.active = True
        self._update_defaults()
        fewer = min(self.layers, key=lambda ly: len(ly.data))
        self._activate(fewer if len(fixed_points.data) != len(moving_points.data)
                       else fixed_points)

    def stop(self) -> None:
        """Stop watching the layers (their points and labels stay)."""
        for layer in self.layers:
            layer.events.data.disconnect(self._on_data)
            if self.viewer.layers.selection.active == layer:
                layer.mode = "pan_zoom"
        self.layers, self.active = (), False

    # ------------------------------------------------------------------ events
    def _other(self, layer: Any) -> Any:
        return self.layers[1] if layer is self.layers[0] else self.layers[0]

    def _on_data(self, event: Any) -> None:
        if self._busy:
            return
        layer = event.source
        action = str(getattr(event, "action", ""))
        if action.endswith("removing"):
            labels = _landmarks.labels_of(layer) or []
            self._removing[id(layer)] = [labels[i] for i in event.data_indices if i < len(labels)]
            return
        if action.endswith("removed"):
            self._remove_partners(self._other(layer), self._removing.pop(id(layer), []))
        elif action.endswith("added"):
            self._activate(self._other(layer))
        elif not action.endswith("changed"):
            return
        self._update_defaults()
        self.timer.start()

    def _remove_partners(self, other: Any, labels: list[str]) -> None:
        """Delete the points of ``other`` whose labels were just deleted in its partner."""
        own = _landmarks.labels_of(other) or []
        indices = {i for i, v in enumerate(own) if v in labels}
        if not indices:
            return
        self._busy = True
        try:
            other.selected_data = indices
            other.remove_selected()
        finally:
            self._busy = False

    def _update_defaults(self) -> None:
        """Give each layer's next point the label of its open partner, else a new pair's."""
        fixed, moving = self.layers
        fixed_labels = _landmarks.labels_of(fixed) or []
        moving_labels = _landmarks.labels_of(moving) or []
        for layer, own, other in ((fixed, fixed_labels, moving_labels),
                                  (moving, moving_labels, fixed_labels)):
            layer.feature_defaults = {_landmarks.LABEL: _landmarks.next_label(own, other)}

    def _activate(self, layer: Any) -> None:
        """Make ``layer`` the active layer, in add mode, for the next click."""
        self.viewer.layers.selection.active = layer
        layer.mode = "add"
