"""The data layer: volumes, readers and writers, sites and cases, preprocessing, the phantom.

Nothing here imports TensorFlow or Qt except :mod:`napari_kdseg.data.pipeline`, which is the
Keras input pipeline and is imported only by training code.
"""
