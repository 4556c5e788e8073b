"""Training jobs for the viewer: ``kdseg`` child processes and their JSON-lines progress.

Neither Qt nor TensorFlow is imported here: :mod:`napari_kdseg.jobs.child` runs and watches a
child process, :mod:`napari_kdseg.jobs.plan` turns the distillation panel's settings into its
command line, and :mod:`napari_kdseg.jobs.progress` folds its events into what the panel shows.
"""
