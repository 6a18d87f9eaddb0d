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


# 1. Never replace a file we did not write.


@pytest.mark.parametrize("command", ["image", "autolabel"])
def test_a_users_json_next_to_the_photos_is_refused_before_any_work(tmp_path, command):
    photos(tmp_path / "photos", ("a.png", "b.png"))
    sidecar = tmp_path / "photos" / "a.json"
    sidecar.write_text(json.dumps(LABELME))
    before = sidecar.read_bytes()
    prompt = ["--prompt", "cat."] if command == "image" else []
    result = gsam2(command, *prompt, "--input", str(tmp_path / "photos"), "--output", str(tmp_path / "photos"),
                   "--no-draw", *no_model(tmp_path))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert str(sidecar) in line and "did not write" in line and "no-such-model" not in line
    assert sidecar.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["a.json", "a.png", "b.png"]


def test_a_users_picture_where_a_drawing_would_go_is_refused(tmp_path):
    photos(tmp_path / "in", ("a.png",))
    (tmp_path / "out").mkdir()
    Image.fromarray(shapes_image(20, 30, seed=9)).save(tmp_path / "out" / "a.jpg")  # the user's, not an input
    result = gsam2("image", "--prompt", "cat.", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                   *no_model(tmp_path))
    assert result.returncode == 2 and str(tmp_path / "out" / "a.jpg") in result.stderr, result.stderr


def test_our_own_outputs_of_an_earlier_run_are_replaced(tmp_path, tiny_models):
    photos(tmp_path / "in")
    out = tmp_path / "out"
    for _ in range(2):
        result = gsam2("image", "--prompt", "cat.", "--input", str(tmp_path / "in"), "--output", str(out),
                       *model_args(tiny_models))
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.json", "b.jpg", "b.json"]
    assert all(outputs.written_by_gsam2(p) for p in out.iterdir())


def test_what_counts_as_ours(tmp_path):
    from gsam2.core.video_io import VideoWriter

    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps({"image_path": "a.png", "annotations": [], "box_format": "xyxy",
                                "img_width": 4, "img_height": 3, "caption": "x"}, indent=2))
    reference = tmp_path / "reference.json"  # the same record as the reference script writes it (indent=4)
    reference.write_text(json.dumps(json.loads(ours.read_text()), indent=4))
    labelme = tmp_path / "labelme.json"
    labelme.write_text(json.dumps(LABELME, indent=2))
    truncated = tmp_path / "truncated.json"
    truncated.write_text(ours.read_text()[:30])
    frames = tmp_path / "frames.jsonl"
    frames.write_text(json.dumps({"frame_index": 0, "objects": []}) + "\n")
    other_lines = tmp_path / "other.jsonl"
    other_lines.write_text('{"text": "a user\'s data set"}\n')
    empty_lines = tmp_path / "empty.jsonl"  # a run stopped before its first frame leaves this
    empty_lines.write_text("")
    photo = tmp_path / "photo.jpg"
    Image.fromarray(shapes_image(20, 30)).save(photo)
    video = tmp_path / "video.mp4"
    with VideoWriter(video, fps=10) as writer:
        for frame in moving_squares(3):
            writer.write(frame)
    users_video = write_video(tmp_path / "users.mp4", moving_squares(3))
    link = tmp_path / "link.json"
    link.symlink_to(ours)

    assert outputs.written_by_gsam2(ours) and outputs.written_by_gsam2(frames)
    assert outputs.written_by_gsam2(empty_lines) and outputs.written_by_gsam2(video)
    for path in (reference, labelme, truncated, other_lines, photo, users_video, link):
        assert not outputs.written_by_gsam2(path), path
    # Absent: nothing to keep; a folder: its write fails later, as that image's failure.
    outputs.check_not_foreign([ours, frames, video, tmp_path / "absent.json", tmp_path])
    with pytest.raises(InputError, match="labelme.json"):
        outputs.check_not_foreign([ours, labelme])
    with pytest.raises(InputError, match="is a folder"):
        outputs.check_not_foreign([tmp_path], folders_refused=True)


def test_video_outputs_of_someone_else_are_refused(tmp_path):
    video = write_video(tmp_path / "clip.mp4", moving_squares(3))
    out = tmp_path / "out"
    out.mkdir()
    for name in ("clip.jsonl", "clip.mp4"):
        theirs = out / name
        theirs.write_text('{"text": "a user\'s line"}\n')
        result = gsam2("video", "--prompt", "cat.", "--input", str(video), "--output", str(out), *no_model(tmp_path))
        assert result.returncode == 2 and str(theirs) in result.stderr, result.stderr
        assert theirs.read_text() == '{"text": "a user\'s line"}\n'
        theirs.unlink()
    (out / "clip.jsonl").mkdir()
    result = gsam2("video", "--prompt", "cat.", "--input", str(video), "--output", str(out), *no_model(tmp_path))
    assert result.returncode == 2 and "is a folder" in result.stderr, result.stderr


def test_a_video_run_replaces_its_own_earlier_outputs(tmp_path, tiny_models):
    from .test_video import gsam2_video

    video = write_video(tmp_path / "clip.mp4", moving_squares(4))
    for _ in range(2):
        result = gsam2_video(tiny_models, "--prompt", "red square.", "--input", str(video), "--output",
                             str(tmp_path / "out"), "--step", "4")
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.jsonl", "clip.mp4"]


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


def test_isolated_write_errors_are_each_images_own_but_a_full_disk_still_stops(tmp_path, tiny_models, monkeypatch):
    """What a Ray actor asks of the shared loop (``isolate_write_errors``): any error while writing one image
    is that image's outcome, and the others are written; a full disk still ends the loop (every later
    write would fail too), so the driver stops the run."""
    from gsam2.core import image_files
    from gsam2.core.errors import DiskFullError
    from gsam2.core.run import Run
    from gsam2.core.spec import RunSpec

    files = [(path, path.stem) for path in photos(tmp_path / "in", ("a.png", "b.png", "c.png"))]
    out = tmp_path / "out"
    out.mkdir()
    run = Run(RunSpec.build(prompt="cat.", detector=str(tiny_models["grounding-dino"]),
                            segmenter=str(tiny_models["sam2"]), device="cpu")).load_for_images()
    real = image_files.write_image_outputs

    def failing(output, name, *args, **kwargs):
        if name == "b":
            raise ValueError("a drawing library's bug")
        return real(output, name, *args, **kwargs)

    monkeypatch.setattr(image_files, "write_image_outputs", failing)
    outcomes = list(image_files.label_files(run, "images", files, out, draw=False, isolate_write_errors=True))
    assert [(o.item[1], o.error) for o in outcomes] == [("a", None), ("b", "ValueError: a drawing library's bug"),
                                                       ("c", None)]
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "c.json"]

    def full(output, name, *args, **kwargs):
        raise DiskFullError(errno.ENOSPC, "No space left on device", str(output / f"{name}.json"))

    monkeypatch.setattr(image_files, "write_image_outputs", full)
    with pytest.raises(DiskFullError):
        list(image_files.label_files(run, "images", files, out, draw=False, isolate_write_errors=True))


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


# 10. Names that are not UTF-8 never crash what is printed.


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes in names")
def test_names_that_are_not_utf8_print_under_strict_utf8(tmp_path, tiny_models):
    folder = tmp_path / "in"
    photos(folder, ("good.png",))
    raw = os.fsencode(folder)
    Image.fromarray(shapes_image(60, 80, seed=3)).save(os.fsdecode(raw + b"/caf\xe9.png"))  # Latin-1, not UTF-8
    Path(os.fsdecode(raw + b"/broken\xff.png")).write_bytes(b"not an image")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    result = subprocess.run(
        [sys.executable, "-m", "gsam2.cli", "image", "--prompt", "cat.", "--input", str(folder), "--output",
         str(tmp_path / "out"), "--no-draw", *model_args(tiny_models)],
        capture_output=True, env=env, timeout=300,
    )
    stdout, stderr = result.stdout.decode("utf-8"), result.stderr.decode("utf-8")  # strict: all valid UTF-8
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr and "UnicodeEncodeError" not in stderr
    assert "images processed: 2" in stdout and "failures:         1" in stdout
    assert "broken\\xff.png" in stdout and "broken\\xff.png" in stderr, (stdout, stderr)
    assert sorted(os.listdir(os.fsencode(tmp_path / "out"))) == [b"caf\xe9.json", b"good.json"]
