"""One click to open MRI files with this plugin without napari asking which reader to use.

napari's own reader also claims ``.nii``, ``.nii.gz``, ``.mha`` and ``.mhd``, so every drop
of such a file asks "Choose reader". napari offers plugins no way to claim a suffix ahead of
it; the user's reader preferences (``settings.plugins.extension2reader``, the table under
File > Preferences > Plugins, and what the dialog's "remember" writes) are the documented
way. This command writes those preferences for the four MRI suffixes at once, when the user
asks for it from the plugin menu; nothing is changed behind their back. Folders still ask
(napari's preferences match folders by path, not by content), with this plugin preselected.
"""

from __future__ import annotations

from napari.settings import get_settings
from napari.utils.notifications import show_info

PLUGIN_NAME = "napari-kdseg"

#: The suffixes napari would otherwise ask about, as napari's preference patterns.
MRI_FILE_PATTERNS = ("*.nii", "*.nii.gz", "*.mha", "*.mhd")


def open_mri_files_without_asking() -> None:
    """Make this plugin the reader of MRI files in the user's napari preferences."""
    plugins = get_settings().plugins
    plugins.extension2reader = {
        **plugins.extension2reader,
        **dict.fromkeys(MRI_FILE_PATTERNS, PLUGIN_NAME),
    }
    show_info(
        "MRI files (.nii, .nii.gz, .mha, .mhd) now open without asking which reader to use. "
        "To undo: File > Preferences > Plugins."
    )
