"""The package metadata, the plugin manifest and requirements.txt agree."""

import tomllib

import yaml

from gsam2.operators import OPERATOR_CLASSES

from .conftest import REPO_ROOT


def test_requirements_txt_matches_pyproject():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    requirements = [
        line.strip()
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert sorted(requirements) == sorted(pyproject["project"]["dependencies"])


def test_fiftyone_manifest():
    manifest = yaml.safe_load((REPO_ROOT / "fiftyone.yml").read_text())
    assert manifest["name"] == "@gsam2/grounded-sam2"
    declared = manifest.get("operators") or []
    registered = [operator_class().config.name for operator_class in OPERATOR_CLASSES]
    assert sorted(declared) == sorted(registered), "every operator must be both registered and listed"


def test_version_is_consistent():
    import gsam2

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    manifest = yaml.safe_load((REPO_ROOT / "fiftyone.yml").read_text())
    assert gsam2.__version__ == pyproject["project"]["version"] == str(manifest["version"])


def test_every_package_folder_is_in_pyproject():
    """pyproject lists its packages (the repository root is ``gsam2``): a folder with an ``__init__.py``
    under the installed folders that is missing there would be left out of the wheel."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    folders = {
        ".".join(("gsam2", *init.parent.relative_to(REPO_ROOT).parts))
        for top in ("cli", "core", "operators", "nuclio")
        for init in (REPO_ROOT / top).rglob("__init__.py")
    }
    assert folders - listed == set(), "add these to [tool.setuptools] packages"
    assert {"gsam2.nuclio.handlers", "gsam2.nuclio.sdk", "gsam2.nuclio.rest"} <= folders
