"""Inference: trained models (``.keras`` or ONNX) segment whole volumes on their source grid.

Nothing here imports TensorFlow unless a ``.keras`` model is loaded.
"""
