"""One real Ray cluster for every Ray test of a session (starting one costs seconds; a test should not pay it).

``.ci/run`` starts a cluster (``ray start --head``) and exports ``RAY_ADDRESS``: the tests join it. Without
it (a developer's ``pytest``), the first Ray test starts a local cluster of 2 CPUs in this process
(``ray.init(num_cpus=2)``), with its files under a temporary folder, and it stops with the session.
Commands run in a subprocess get the address to pass as ``--ray ADDRESS``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest


@pytest.fixture(scope="session")
def ray_address() -> str:
    """The GCS address (``HOST:PORT``) of the session's Ray cluster; this process is connected to it."""
    ray = pytest.importorskip("ray", reason='Ray is not installed: pip install "gsam2[ray]"')
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    temporary = None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # A short path: Ray's socket paths under it must stay within the 107 bytes a Unix socket name allows.
            temporary = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temporary)
    yield ray.get_runtime_context().gcs_address
    if temporary is not None:
        ray.shutdown()
        shutil.rmtree(temporary, ignore_errors=True)
