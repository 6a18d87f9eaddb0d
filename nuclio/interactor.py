"""Old path of :mod:`gsam2.nuclio.handlers.interactor`, kept for compatibility.

For a ``main.py`` generated before (``from gsam2.nuclio.interactor import handler,
init_context``). The old name is bound to the new module itself, not to a copy of its names: all
of it is there (Nuclio reads its ``init_context`` and ``handler``), and a patch through either
path reaches the same code.
"""

import sys

from .handlers import interactor

sys.modules[__name__] = interactor
