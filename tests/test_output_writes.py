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


# 6. One failed write is that image's failure; a full disk stops the run cleanly.


def test_a_folder_in_the_way_of_one_output_fails_that_image_only(tmp_path, tiny_models):
    photos(tmp_path / "in", ("img001.png", "img002.png", "img003.png"))
    out = tmp_path / "out"
    (out / "img002.json").mkdir(parents=True)
    result = gsam2("image", "--prompt", "cat.", "--input", str(tmp_path / "in"), "--output", str(out), "--no-draw",
                   "--quiet", *model_args(tiny_models))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "images processed: 2" in result.stdout and "failures:         1" in result.stdout
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "img002.png" in line and str(out / "img002.json") in line
    assert sorted(p.name for p in out.iterdir()) == ["img001.json", "img002.json", "img003.json"]
    assert (out / "img002.json").is_dir() and not list((out / "img002.json").iterdir())


def test_a_full_disk_stops_the_run_with_its_summary(tmp_path, tiny_models, monkeypatch, capsys):
    """The disk fills while image c's JSON is written: a and b are kept, c fails, d and e are not started."""
    photos(tmp_path / "in", ("a.png", "b.png", "c.png", "d.png", "e.png"))
    out = tmp_path / "out"
    real = Path.write_bytes

    def full_from_c_on(self, data):
        if self.name.startswith((".a.", ".b.")):  # the temporary files of a's and b's outputs
            return real(self, data)
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_from_c_on)
    status = cli.main(["image", "--prompt", "cat.", "--input", str(tmp_path / "in"), "--output", str(out),
                       "--no-draw", "--quiet", *model_args(tiny_models)])
    monkeypatch.undo()
    captured = capsys.readouterr()
    assert status == 1
    assert "images processed: 2" in captured.out and "failures:         1" in captured.out
    assert "no space left on device" in captured.out.lower() and "2 images not processed" in captured.out
    assert str(out / "c.json") in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.json"], "nothing half-written, no temporary file"


def test_a_disk_quota_stops_the_run_too(tmp_path, tiny_models, monkeypatch, capsys):
    if not hasattr(errno, "EDQUOT"):
        pytest.skip("no disk quotas on this system")
    photos(tmp_path / "in", ("a.png", "b.png"))

    def over_quota(self, data):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(Path, "write_bytes", over_quota)
    status = cli.main(["image", "--prompt", "cat.", "--input", str(tmp_path / "in"), "--output",
                       str(tmp_path / "out"), "--no-draw", "--quiet", *model_args(tiny_models)])
    monkeypatch.undo()
    captured = capsys.readouterr()
    assert status == 1 and "1 images not processed" in captured.out and "quota" in captured.out.lower()
    assert list((tmp_path / "out").iterdir()) == []


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
