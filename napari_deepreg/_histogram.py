"""A small histogram of Jacobian determinants, painted with QPainter (no matplotlib needed).

Bars at ``det <= 0`` (folds) are red, the others grey; a dashed line marks ``det = 1`` (volume
kept). Counts are shown on a log scale so that a handful of folded voxels stays visible next to
millions of healthy ones. ``counts`` and ``edges`` stay readable for tests.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget


class JacobianHistogram(QWidget):
    """Histogram widget: call :meth:`set_values` with Jacobian determinants."""

    def __init__(self, parent: QWidget | None = None, bins: int = 60) -> None:
        super().__init__(parent)
        self.bins = bins
        self.counts = np.zeros(0, dtype=np.int64)
        self.edges = np.zeros(0)
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Histogram of Jacobian determinants (log counts); red bars: det <= 0")

    def set_values(self, values: np.ndarray) -> None:
        """Histogram ``values`` over a range that always includes 0 and 1."""
        values = np.asarray(values, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            self.counts, self.edges = np.zeros(0, dtype=np.int64), np.zeros(0)
        else:
            low, high = np.percentile(values, [0.1, 99.9])
            low, high = min(low, 0.0, float(values.min())), max(high, 2.0)
            self.counts, self.edges = np.histogram(np.clip(values, low, high), self.bins,
                                                   range=(low, high))
        self.update()

    def clear(self) -> None:
        """Show nothing."""
        self.counts, self.edges = np.zeros(0, dtype=np.int64), np.zeros(0)
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        margin, bottom = 6.0, 16.0
        area = QRectF(margin, margin, self.width() - 2 * margin, self.height() - margin - bottom)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        if self.counts.size == 0 or area.width() <= 0 or area.height() <= 0:
            painter.setPen(QColor(160, 160, 160))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no field analysed")
            return
        low, high = float(self.edges[0]), float(self.edges[-1])

        def x_of(value: float) -> float:
            return area.left() + (value - low) / (high - low) * area.width()

        heights = np.log1p(self.counts) / max(np.log1p(self.counts.max()), 1e-9)
        for k, h in enumerate(heights):
            if self.counts[k] == 0:
                continue
            left, right = x_of(self.edges[k]), x_of(self.edges[k + 1])
            bar = QRectF(left, area.bottom() - h * area.height(), max(right - left - 1, 1),
                         h * area.height())
            folded = self.edges[k + 1] <= 0 or (self.edges[k] <= 0 < self.edges[k + 1])
            painter.fillRect(bar, QColor(220, 60, 60) if folded else QColor(170, 180, 195))
        pen = QPen(QColor(255, 255, 255))
        pen.setStyle(Qt.PenStyle.DashLine)
        painter.setPen(pen)
        for value in (0.0, 1.0):
            if low <= value <= high:
                x = x_of(value)
                painter.drawLine(QPointF(x, area.top()), QPointF(x, area.bottom()))
        painter.setPen(QColor(200, 200, 200))
        painter.drawText(QPointF(area.left(), self.height() - 3), f"{low:.2g}")
        label = f"{high:.2g}"
        painter.drawText(QPointF(area.right() - 7 * len(label), self.height() - 3), label)
        if low <= 1.0 <= high:
            painter.drawText(QPointF(x_of(1.0) - 3, self.height() - 3), "1")
