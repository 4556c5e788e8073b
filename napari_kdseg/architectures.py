"""The architectures by command-line name, and the names people read.

Imports nothing, so the napari process, the job planner and the training presets can tell
teachers from students without loading Keras (:mod:`napari_kdseg.models` builds them).
"""

from __future__ import annotations

#: The paper's teachers (T1 DeepLabV3+, T2 UNet++).
TEACHERS = {"unetpp": "UNet++", "deeplabv3plus": "DeepLabV3+"}
#: The paper's light students.
STUDENTS = {"enet": "ENet", "espnet": "ESPNet", "erfnet": "ERFNet"}
DISPLAY_NAMES = {**STUDENTS, **TEACHERS}
#: Every architecture, by ascending parameter count as in the paper's Table 1.
MODEL_NAMES = ("espnet", "enet", "erfnet", "unetpp", "deeplabv3plus")
