"""``python -m serving --root work/exports --port 8501``: the same as ``pipeline serve``."""

from serving.server import main

raise SystemExit(main())
