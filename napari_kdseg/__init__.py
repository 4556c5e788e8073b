"""napari-kdseg: relation-based knowledge distillation for prostate MRI segmentation.

The package is layered (see ``ARCHITECTURE.md`` in the shared docs): ``data`` at the
bottom (volumes, readers, sites, preprocessing, the synthetic phantom), Keras models and
losses above it, and the napari glue on top. Importing this package imports nothing heavy.
"""

__version__ = "0.1.0"
