"""Training: typed configs, the cyclic schedule, the Distiller (eq. 8), runs and progress.

Imports Keras (and so the backend); the napari process reaches it only through a child
``kdseg`` process.
"""
