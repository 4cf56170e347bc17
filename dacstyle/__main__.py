"""``python -m dacstyle``: the same as the ``dacstyle`` command."""

import sys

from dacstyle.cli import main

sys.exit(main())
