"""Distillation terms and teachers, as the Distiller sees them.

- :mod:`~napari_kdseg.distillation.terms`: the registry of distillation terms (LM, KMM, AAM
  and any registered beside them). Keras-free: the napari panel, the job planner, the
  command line and the configuration read it.
- :mod:`~napari_kdseg.distillation.term`: :class:`DistillationTerm`, the one call signature
  every built term has (Keras).
- :mod:`~napari_kdseg.distillation.teacher`: :class:`Teacher`, what the Distiller asks of a
  teacher, and :class:`KerasTeacher` (Keras).

This package's ``__init__`` imports nothing, so that reading the registry loads no Keras.
"""
