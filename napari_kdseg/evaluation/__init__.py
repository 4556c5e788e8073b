"""Evaluation: 3D metrics on the source grid, per-slice scores, trained-model scoring and
contour figures. The grids that train the models they score live in ``experiments``."""
