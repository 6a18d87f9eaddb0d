"""FiftyOne loads the repository as the ``@gsam2/grounded-sam2`` plugin."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from .conftest import REPO_ROOT

PLUGIN_NAME = "@gsam2/grounded-sam2"

LOAD_PLUGIN = """
import json
import fiftyone.plugins as fop
from fiftyone.plugins.context import build_plugin_contexts

names = [plugin.name for plugin in fop.list_plugins()]
contexts = {context.name: context for context in build_plugin_contexts(enabled="all")}
ours = contexts.get("@gsam2/grounded-sam2")
print(json.dumps({
    "names": names,
    "errors": ours.errors if ours else None,
    "operators": sorted(op.uri for op in ours.instances) if ours else None,
}))
"""


@pytest.fixture(scope="module")
def plugins_dir(tmp_path_factory):
    """A plugins folder holding a copy of the repository, as `fiftyone plugins download` leaves it."""
    root = tmp_path_factory.mktemp("plugins")
    ignore = shutil.ignore_patterns(".git", ".ci", "venv", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", "out")
    shutil.copytree(REPO_ROOT, root / "grounded-sam2", ignore=ignore)
    return root


def test_fiftyone_loads_the_plugin_without_errors(plugins_dir, tmp_path):
    env = dict(os.environ, FIFTYONE_PLUGINS_DIR=str(plugins_dir))
    # Run from an unrelated folder with a fresh interpreter, as the App server would.
    result = subprocess.run(
        [sys.executable, "-c", LOAD_PLUGIN], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert PLUGIN_NAME in report["names"]
    assert report["errors"] == [], "\n".join(report["errors"])
    declared = yaml.safe_load((REPO_ROOT / "fiftyone.yml").read_text())["operators"] or []
    assert report["operators"] == sorted(f"{PLUGIN_NAME}/{name}" for name in declared)


def test_root_package_imports_without_fiftyone():
    """The CLI and the CVAT functions import the package; that must not import FiftyOne."""
    code = "import sys, gsam2, gsam2.core, gsam2.cli; assert 'fiftyone' not in sys.modules; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
