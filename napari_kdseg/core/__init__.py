"""The project's errors and atomic file writes: imported by every layer, importing none."""
