"""The scrolling page both panels are built on, so they fit a laptop's screen docked together."""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QScrollArea, QWidget


class VerticalScrollArea(QScrollArea):
    """``page`` scrolling down only, never sideways: the area is as wide as the page needs,
    so a dock holding it cannot be made narrower than its content and cut it at the right.

    A page taller than the screen no longer sets the dock's height, so the panels fit a
    laptop's screen (1280 x 800) docked together.
    """

    def __init__(self, page: QWidget) -> None:
        super().__init__()
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(page)

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        width = (
            self.widget().minimumSizeHint().width()
            + self.verticalScrollBar().sizeHint().width()
            + 2 * self.frameWidth()
        )
        return QSize(max(hint.width(), width), hint.height())
