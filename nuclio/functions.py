"""Old path of :mod:`gsam2.nuclio.generate`, kept for compatibility: ``python -m gsam2.nuclio.functions OUTDIR``
still writes the function folders (now into ``nuclio/serverless/`` in this repository).

Imported, the old name is bound to the new module itself, not to a copy of its names; run
with ``-m``, it runs the generator's ``main``.
"""

import sys

from . import generate

if __name__ == "__main__":
    sys.exit(generate.main())
sys.modules[__name__] = generate
