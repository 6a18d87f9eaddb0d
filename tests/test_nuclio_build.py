"""The function images' builds resolve: the torch each image ends up with is one transformers accepts.

pip keeps a base image's torch when it satisfies the project's floor; transformers 5
disables PyTorch below its own minimum (transformers/utils/import_utils.py,
``is_torch_available``), so a base image below it fails every function's preload step.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import requires
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from gsam2.nuclio.generate import FUNCTIONS

from .conftest import REPO_ROOT

FUNCTIONS_DIR = REPO_ROOT / "nuclio" / "serverless"


def project_floor(name: str) -> Version:
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [requirement] = [Requirement(line) for line in dependencies if Requirement(line).name == name]
    [spec] = [s for s in requirement.specifier if s.operator == ">="]
    return Version(spec.version)


def transformers_torch_floor() -> Version:
    """The torch transformers itself asks for (its ``torch`` extra), as installed here."""
    floors = [
        Version(spec.version)
        for line in requires("transformers") or []
        if (req := Requirement(line)).name == "torch"
        for spec in req.specifier
        if spec.operator == ">="
    ]
    assert floors, "transformers declares no torch floor: read import_utils.is_torch_available instead"
    return max(floors)


def build_steps(path: Path) -> tuple[str, list[str]]:
    config = yaml.safe_load(path.read_text())
    build = config["spec"]["build"]
    return build["baseImage"], [step["value"] for step in build["directives"]["postCopy"] if step["kind"] == "RUN"]


def test_the_project_floor_satisfies_transformers():
    assert project_floor("torch") >= transformers_torch_floor()


@pytest.mark.parametrize("kind", list(FUNCTIONS))
def test_gpu_base_image_torch_satisfies_every_floor(kind):
    image, _ = build_steps(FUNCTIONS_DIR / kind / "function-gpu.yaml")
    match = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+(?:\.\d+)?)-cuda[\d.]+-cudnn\d+-runtime", image)
    assert match, f"{image}: expected an official pytorch/pytorch runtime image"
    shipped = Version(match.group(1))
    assert shipped >= project_floor("torch"), f"{image} ships torch {shipped}, below pyproject's floor"
    assert shipped >= transformers_torch_floor(), f"{image} ships torch {shipped}; transformers would disable it"


@pytest.mark.parametrize("kind", list(FUNCTIONS))
def test_cpu_image_installs_the_cpu_torch_before_the_project(kind):
    image, steps = build_steps(FUNCTIONS_DIR / kind / "function.yaml")
    assert image.startswith("python:3.11")
    [torch_step] = [i for i, step in enumerate(steps) if re.search(r"\btorch\b", step) and "whl/cpu" in step]
    [project_step] = [i for i, step in enumerate(steps) if "gsam2-src" in step]
    assert torch_step < project_step, "the CPU wheel must be there first, or pip pulls the CUDA one"
    # The CPU wheel index carries builds at or above the floor: the floor stays unpinned from above.
    assert "==" not in steps[torch_step]
