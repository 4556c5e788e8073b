"""``python -m napari_kdseg`` is ``kdseg``: how the viewer starts its child jobs, whatever PATH."""

from napari_kdseg.cli import main

raise SystemExit(main())
