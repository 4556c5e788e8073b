"""Root test configuration.

TensorFlow and a napari canvas in one process crash with Mesa OpenGL on Linux, because
TensorFlow's bundled LLVM clashes with Mesa's libLLVM (see ARCHITECTURE.md). The product
avoids it by never importing TensorFlow in the viewer process; the test suite runs both in
one process, so it loads Mesa's LLVM first and TensorFlow second, the order measured to work.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _load_mesa_llvm() -> None:
    candidates = ["libLLVM-15.so.1", *sorted(glob.glob("/usr/lib/*/libLLVM-*.so.1"), reverse=True)]
    for name in candidates:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return


_load_mesa_llvm()
with contextlib.suppress(ImportError):  # the data-layer tests still run without TensorFlow
    import tensorflow  # noqa: F401
