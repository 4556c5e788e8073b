"""Evaluation: 3D metrics on the source grid, trained-model scoring and the paper's protocol."""
