"""``python -m dacstyle.cli``."""

from . import main

raise SystemExit(main())
