"""``python -m gsam2.cli``: the ``gsam2`` command."""

import sys

from .main import main

sys.exit(main())
