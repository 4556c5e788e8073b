"""Training: typed configs, the cyclic schedule, the Distiller (eq. 8), runs and progress.

Its modules import Keras (and so the backend), except ``config``, whose presets the napari
panel reads; the napari process trains only through a child ``kdseg`` process.
"""
