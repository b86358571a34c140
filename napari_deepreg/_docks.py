"""What every dock widget of the plugin shares: a body that scrolls, and finding sibling docks.

napari stacks dock widgets on the right; a widget taller than the window pushes its neighbours
(and its own read-out) off screen. :func:`scrolling_body` puts a widget's content in a
``QScrollArea`` so that a dock's minimum height is a few rows, whatever it holds, and two docks
fit a 1280x800 screen; the long parts are folded in ``QCollapsible`` sections by the widgets.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

MIN_BODY_HEIGHT = 160
"""Pixels a dock's scroll area asks for at least (its content scrolls below that)."""


def scrolling_body(widget: QWidget) -> QVBoxLayout:
    """Give ``widget`` a vertical scroll area and return the layout to fill inside it."""
    inner = QWidget()
    layout = QVBoxLayout(inner)
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # fit the width
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(inner)
    area.setMinimumHeight(MIN_BODY_HEIGHT)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    widget.scroll_area = area
    return layout


def docked(viewer: Any, cls: type) -> list[Any]:
    """The plugin widgets of class ``cls`` docked in ``viewer``'s window (none without one)."""
    window = getattr(viewer, "window", None)
    widgets = getattr(window, "dock_widgets", {}) if window is not None else {}
    return [w for w in widgets.values() if isinstance(w, cls)]
