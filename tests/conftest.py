"""Shared fixtures: offline settings, tiny models, generated images."""

from __future__ import annotations

import importlib.util
import os
import tempfile
import uuid
from pathlib import Path

# Offline, always: any accidental hub access must fail loudly, not hang.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
# Each test session gets its own database so runs never see each other's datasets.
os.environ.setdefault("FIFTYONE_DATABASE_NAME", f"gsam2-tests-{uuid.uuid4().hex[:8]}")

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

# FiftyOne finds plugins under FIFTYONE_PLUGINS_DIR when it is first imported:
# point it at a folder holding (a link to) this repository, as a user's
# plugins folder holds the downloaded plugin.
_PLUGINS_DIR = Path(tempfile.mkdtemp(prefix="gsam2-plugins-"))
(_PLUGINS_DIR / "grounded-sam2").symlink_to(REPO_ROOT, target_is_directory=True)
os.environ["FIFTYONE_PLUGINS_DIR"] = str(_PLUGINS_DIR)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _load_make_tiny_models():
    spec = importlib.util.spec_from_file_location("make_tiny_models", TESTS_DIR / "make_tiny_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_tiny_models = _load_make_tiny_models()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Folders of tiny random checkpoints: ``{"grounding-dino": ..., "sam2": ...}``."""
    return make_tiny_models.write_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def detector(tiny_models):
    from gsam2.core import load_detector

    return load_detector(str(tiny_models["grounding-dino"]), device="cpu")


@pytest.fixture(scope="session")
def segmenter(tiny_models):
    from gsam2.core import load_segmenter

    return load_segmenter(str(tiny_models["sam2"]), device="cpu")


@pytest.fixture
def models_env(monkeypatch, tiny_models):
    """The environment a CVAT function reads its models from, pointing at the tiny ones."""
    monkeypatch.setenv("GSAM2_DETECTOR", str(tiny_models["grounding-dino"]))
    monkeypatch.setenv("GSAM2_SEGMENTER", str(tiny_models["sam2"]))
    monkeypatch.setenv("GSAM2_TRACKER", str(tiny_models["sam2-video"]))
    monkeypatch.setenv("GSAM2_DEVICE", "cpu")
    return monkeypatch


def shapes_image(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """A deterministic RGB image with a few coloured rectangles on grey."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 90, dtype=np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
        h, w = rng.integers(height // 6, height // 2), rng.integers(width // 6, width // 2)
        image[y : y + h, x : x + w] = rng.integers(0, 255, 3)
    return image
