"""Writing outputs: users' files are never replaced, a failed write is one image's failure, a full disk stops
the run cleanly, outputs get the umask's mode, and names that are not UTF-8 print."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gsam2 import cli
from gsam2.core.errors import InputError
from gsam2.core import outputs
from gsam2.core.outputs import atomic_write_text

from .conftest import shapes_image
from .media import moving_squares, write_video
from .test_cli import gsam2, model_args
from .test_no_data_loss import photos

LABELME = {"version": "5.4.1", "shapes": [{"label": "cat", "points": [[1, 2], [3, 4]]}], "imagePath": "a.png"}


def no_model(tmp_path: Path) -> list[str]:
    """A detector that does not exist: a run that reached the models would fail with another error."""
    return ["--detector", str(tmp_path / "no-such-model")]


# 8. Outputs get the mode the user's umask gives.


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_umasks_mode(tmp_path, tiny_models, umask, mode, capsys):
    photos(tmp_path / "in", ("a.png",))
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "plain.json", "{}")
        status = cli.main(["image", "--prompt", "cat.", "--input", str(tmp_path / "in"), "--output",
                           str(tmp_path / "out"), "--quiet", *model_args(tiny_models)])
    finally:
        os.umask(previous)
    assert status == 0, capsys.readouterr().err
    for path in (tmp_path / "plain.json", tmp_path / "out" / "a.json", tmp_path / "out" / "a.jpg"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
