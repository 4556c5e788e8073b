"""napari widgets: thin Qt glue over the core (never imports TensorFlow)."""
