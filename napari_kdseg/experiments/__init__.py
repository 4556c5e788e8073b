"""Experiments: the paper's Table 2 and Table 4 grids (cells, settings pinning, resumable
runs), their reports, and the end-to-end demo. They train and score through ``training``
and ``evaluation``."""
