"""Old path of :mod:`gsam2.nuclio.sdk.tracking`, kept for compatibility.

For ``cvat-cli ... --function-module gsam2.nuclio.sdk_tracking``. The old name is bound to the
new module itself, not to a copy of its names: all of it is there (cvat-cli's loader reads its
``create``), and a patch through either path reaches the same code.
"""

import sys

from .sdk import tracking

sys.modules[__name__] = tracking
