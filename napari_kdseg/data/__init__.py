"""The data layer: volumes, readers and writers, sites and cases, preprocessing, the phantom.

Nothing here imports Keras, TensorFlow or Qt (the Keras input pipeline lives in
:mod:`napari_kdseg.training.pipeline`).
"""
