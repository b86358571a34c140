"""A small live line plot of training and validation loss, drawn with QPainter.

No plotting library is needed (matplotlib and pyqtgraph are not dependencies of the plugin). The
plot keeps its points in :attr:`LossPlot.series` (``{"train": [(step, loss), ...], "val": ...}``)
so tests can read what was drawn; it must be fed from the GUI thread. Other lines (the time-series
widget's drift against frame) pass their own ``colors``, ``legend`` and axis text.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

COLORS = {"train": QColor(80, 160, 255), "val": QColor(255, 150, 40)}
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 8, 18, 20


class LossPlot(QWidget):
    """Loss against optimiser step, one line per phase (``"train"``, ``"val"``).

    Example
    -------
    >>> plot = LossPlot()                 # doctest: +SKIP
    >>> plot.add_point("train", 1, 0.5)   # doctest: +SKIP
    >>> plot.series["train"]              # doctest: +SKIP
    [(1, 0.5)]
    """

    def __init__(self, parent: QWidget | None = None, *, colors: dict[str, QColor] | None = None,
                 legend: str = "— train   — val", empty: str = "loss appears here",
                 x_label: str = "step",
                 tooltip: str = "loss per step: training (blue), validation (orange)") -> None:
        super().__init__(parent)
        self.colors = dict(colors or COLORS)
        self.series: dict[str, list[tuple[int, float]]] = {name: [] for name in self.colors}
        self.legend, self.empty, self.x_label = legend, empty, x_label
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip(tooltip)

    def add_point(self, phase: str, step: int, value: float) -> None:
        """Append ``(step, value)`` to the ``phase`` line (non-finite values are skipped)."""
        if phase not in self.series:
            raise ValueError(f"phase: expected one of {sorted(self.series)}, got {phase!r}.")
        if math.isfinite(value):
            self.series[phase].append((int(step), float(value)))
            self.update()

    def clear(self) -> None:
        """Forget every point."""
        for points in self.series.values():
            points.clear()
        self.update()

    def truncate(self, step: int) -> None:
        """Drop the points after ``step`` (a resumed run redraws from its checkpoint)."""
        for phase, points in self.series.items():
            self.series[phase] = [p for p in points if p[0] <= step]
        self.update()

    def paintEvent(self, _event: object) -> None:  # noqa: N802 (Qt override)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        area = QRectF(MARGIN_LEFT, MARGIN_TOP, max(self.width() - MARGIN_LEFT - MARGIN_RIGHT, 1),
                      max(self.height() - MARGIN_TOP - MARGIN_BOTTOM, 1))
        text = self.palette().windowText().color()
        painter.setPen(QPen(text, 1))
        painter.drawRect(area)
        points = [p for line in self.series.values() for p in line]
        if not points:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, self.empty)
            painter.end()
            return
        steps = [p[0] for p in points]
        values = [p[1] for p in points]
        x0, x1 = min(steps), max(max(steps), min(steps) + 1)
        y0, y1 = min(values), max(values)
        if y1 - y0 < 1e-12:
            y0, y1 = y0 - 0.5, y1 + 0.5

        def to_screen(step: int, value: float) -> QPointF:
            x = area.left() + (step - x0) / (x1 - x0) * area.width()
            y = area.bottom() - (value - y0) / (y1 - y0) * area.height()
            return QPointF(x, y)

        for phase, line in self.series.items():
            if not line:
                continue
            painter.setPen(QPen(self.colors[phase], 1.5))
            if len(line) == 1:
                painter.drawEllipse(to_screen(*line[0]), 2.5, 2.5)
            else:
                painter.drawPolyline(QPolygonF([to_screen(s, v) for s, v in line]))
        painter.setPen(QPen(text, 1))
        painter.drawText(QRectF(0, area.top() - 6, MARGIN_LEFT - 4, 14),
                         Qt.AlignmentFlag.AlignRight, f"{y1:.3g}")
        painter.drawText(QRectF(0, area.bottom() - 8, MARGIN_LEFT - 4, 14),
                         Qt.AlignmentFlag.AlignRight, f"{y0:.3g}")
        painter.drawText(QRectF(area.left(), area.bottom() + 2, area.width(), 16),
                         Qt.AlignmentFlag.AlignRight, f"{self.x_label} {x1}")
        painter.drawText(QRectF(area.left(), 0, area.width(), MARGIN_TOP),
                         Qt.AlignmentFlag.AlignLeft, self.legend)
        painter.end()
