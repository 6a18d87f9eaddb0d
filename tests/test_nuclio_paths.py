"""The CVAT adapter's layout: the old module paths still load the very same modules.

Users name these paths outside this repository: ``cvat-cli --function-module
gsam2.nuclio.sdk_detection``, the ``main.py`` of a function folder generated before
(``from gsam2.nuclio.detector import handler, init_context``) and ``python -m
gsam2.nuclio.functions OUTDIR``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys

import pytest

import gsam2.nuclio
from gsam2.nuclio import generate

from .conftest import REPO_ROOT

SERVERLESS_DIR = REPO_ROOT / "nuclio" / "serverless"

OLD_TO_NEW = {
    "gsam2.nuclio.sdk_detection": "gsam2.nuclio.sdk.detection",
    "gsam2.nuclio.sdk_interaction": "gsam2.nuclio.sdk.interaction",
    "gsam2.nuclio.sdk_tracking": "gsam2.nuclio.sdk.tracking",
    "gsam2.nuclio.detector": "gsam2.nuclio.handlers.detector",
    "gsam2.nuclio.interactor": "gsam2.nuclio.handlers.interactor",
    "gsam2.nuclio.tracker": "gsam2.nuclio.handlers.tracker",
    "gsam2.nuclio.functions": "gsam2.nuclio.generate",
}


def load_file(path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("old", OLD_TO_NEW)
def test_an_old_path_is_the_new_module_itself(old):
    new = importlib.import_module(OLD_TO_NEW[old])
    assert importlib.import_module(old) is new
    # `from gsam2.nuclio import sdk_detection` reads the package's attribute, which the import set
    assert getattr(gsam2.nuclio, old.rsplit(".", 1)[1]) is new
    assert sys.modules[old] is new


@pytest.mark.parametrize("old", [name for name in OLD_TO_NEW if ".sdk_" in name])
def test_cvat_cli_loads_an_old_sdk_path(old):
    """What cvat-cli's ``FunctionLoader.load`` (cvat_cli/_internal/common.py, 2.80) does with a
    ``--function-module``: ``importlib.import_module``, then ``create(**params)`` when the module has
    it; the result must have a ``spec``."""
    module = importlib.import_module(old)
    new = importlib.import_module(OLD_TO_NEW[old])
    assert module.create is new.create
    assert callable(module.create) and "spec" in dir(module.create)


@pytest.mark.parametrize("kind", list(generate.FUNCTIONS))
def test_main_py_files_import_the_handlers_from_their_new_path(kind, tmp_path):
    module = importlib.import_module(f"gsam2.nuclio.handlers.{generate.FUNCTIONS[kind]['module']}")
    main_py = SERVERLESS_DIR / kind / "main.py"
    assert main_py.read_text() == generate.MAIN_PY.format(module=generate.FUNCTIONS[kind]["module"])
    assert f"from gsam2.nuclio.handlers.{generate.FUNCTIONS[kind]['module']} import" in main_py.read_text()
    main = load_file(main_py, f"main_{kind.replace('-', '_')}")
    assert (main.handler, main.init_context) == (module.handler, module.init_context)
    # a main.py generated before the move
    old_main = tmp_path / "main.py"
    old_main.write_text(f"from gsam2.nuclio.{generate.FUNCTIONS[kind]['module']} import handler, init_context\n")
    old = load_file(old_main, f"old_main_{kind.replace('-', '_')}")
    assert (old.handler, old.init_context) == (module.handler, module.init_context)


def test_python_m_old_generator_path_still_runs(tmp_path):
    help_text = subprocess.run(
        [sys.executable, "-m", "gsam2.nuclio.functions", "--help"],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )
    assert help_text.returncode == 0, help_text.stderr
    assert "--labels" in help_text.stdout and "python -m gsam2.nuclio.generate OUTDIR" in help_text.stdout
    result = subprocess.run(
        [sys.executable, "-m", "gsam2.nuclio.functions", str(tmp_path)],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )
    assert result.returncode == 0, result.stderr
    # it writes what the repository holds, as `python -m gsam2.nuclio.generate` does
    for kind in generate.FUNCTIONS:
        for name in ("function.yaml", "function-gpu.yaml", "main.py"):
            assert (tmp_path / kind / name).read_text() == (SERVERLESS_DIR / kind / name).read_text(), (kind, name)
