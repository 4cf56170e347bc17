"""``python -m dacstyle.container.server``: the entry point every runtime starts."""

from .main import main

raise SystemExit(main())
