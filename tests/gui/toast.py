"""What napari's notification toast shows of a message: one line, cut with "…" when long."""

from __future__ import annotations

from napari._qt.dialogs.qt_notification import NapariQtNotification
from napari._qt.qt_main_window import _QtMainWindow
from napari.utils.notifications import Notification
from qtpy.QtWidgets import QApplication, QLabel


def toast_text(message: str) -> str:
    """The text napari's toast displays for ``message``, on the canvas of the current viewer
    as napari shows it (the viewer's style sheet sets the font)."""
    window = _QtMainWindow.current()
    assert window is not None, "napari shows toasts on a viewer"
    assert window.isVisible(), "napari shows toasts on a shown viewer"
    toast = NapariQtNotification.from_notification(
        Notification(message), window._qt_viewer.canvas.native
    )
    toast.show()
    for _ in range(5):  # the eliding label takes its width in a layout pass or two
        QApplication.processEvents()
    shown = QLabel.text(toast.message)  # the label's own text: the elided one
    toast.close()
    return shown
