"""Outputs never replace inputs, never collide, never end half-written; output problems stop a run before work."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from gsam2 import cli
from gsam2.core.outputs import atomic_write_text, check_output_folder
from gsam2.core.errors import InputError

from .conftest import shapes_image
from .test_cli import gsam2, model_args


def photos(folder: Path, names=("a.jpg", "b.png")) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        path = folder / name
        Image.fromarray(shapes_image(60, 80, seed=i)).save(path)
        paths.append(path)
    return paths


def test_image_output_into_the_input_folder_is_refused_before_any_work(tmp_path, tiny_models):
    sources = photos(tmp_path / "photos")
    before = {p: p.read_bytes() for p in sources}
    result = gsam2("image", "--prompt", "cat.", "--input", str(tmp_path / "photos"),
                   "--output", str(tmp_path / "photos"), "--detector", str(tmp_path / "no-such-model"))
    assert result.returncode == 2, result.stderr
    assert "would overwrite the input" in result.stderr and "a.jpg" in result.stderr
    assert {p: p.read_bytes() for p in sources} == before
    # JSON alone next to the photos is fine: nothing is overwritten.
    result = gsam2("image", "--prompt", "cat.", "--input", str(tmp_path / "photos"),
                   "--output", str(tmp_path / "photos"), "--no-draw", *model_args(tiny_models))
    assert result.returncode == 0, result.stderr
    assert {p: p.read_bytes() for p in sources} == before
    assert sorted(p.name for p in (tmp_path / "photos").glob("*.json")) == ["a.json", "b.json"]


def test_outputs_inside_a_recursive_input_folder_are_not_read_again(tmp_path, tiny_models):
    photos(tmp_path / "photos")
    out = tmp_path / "photos" / "out"
    for _ in range(2):
        result = gsam2("image", "--prompt", "cat.", "--input", str(tmp_path / "photos"), "--recursive",
                       "--output", str(out), *model_args(tiny_models))
        assert result.returncode == 0, result.stderr
        assert "images processed: 2" in result.stdout, "the drawings of the first run are not inputs of the second"
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.json", "b.jpg", "b.json"]


def test_colliding_stems_all_get_their_results(tmp_path, tiny_models):
    photos(tmp_path / "in", ("a-2.jpg", "a.jpg", "a.png"))
    result = gsam2("image", "--prompt", "cat.", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                   "--no-draw", *model_args(tiny_models))
    assert result.returncode == 0 and "images processed: 3" in result.stdout
    written = {p.name: json.loads(p.read_text())["image_path"] for p in (tmp_path / "out").glob("*.json")}
    assert sorted(written) == ["a-2.json", "a.jpg.json", "a.png.json"]
    assert sorted(Path(path).name for path in written.values()) == ["a-2.jpg", "a.jpg", "a.png"]


def test_video_output_over_its_input_is_refused(tmp_path):
    from .media import write_video

    video = tmp_path / "clip.mp4"
    write_video(video, [shapes_image(48, 64, seed=i) for i in range(5)])
    before = video.read_bytes()
    result = gsam2("video", "--prompt", "cat.", "--input", str(video), "--output", str(tmp_path),
                   "--detector", str(tmp_path / "no-such-model"))
    assert result.returncode == 2 and "would overwrite the input" in result.stderr
    assert video.read_bytes() == before


@pytest.mark.parametrize("problem", ["a-file", "parent-is-a-file", "read-only"])
def test_output_folder_problems_stop_before_models_load(tmp_path, problem):
    photos(tmp_path / "photos")
    if problem == "a-file":
        output = tmp_path / "out"
        output.write_text("not a folder")
    elif problem == "parent-is-a-file":
        (tmp_path / "parent").write_text("x")
        output = tmp_path / "parent" / "out"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        output = tmp_path / "ro"
        output.mkdir()
        output.chmod(stat.S_IRUSR | stat.S_IXUSR)
    # A model that does not exist: reaching it would be a different error.
    result = gsam2("image", "--prompt", "cat.", "--input", str(tmp_path / "photos"), "--output", str(output),
                   "--detector", str(tmp_path / "no-such-model"))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: --output") and "no-such-model" not in line


def test_read_only_output_folder_is_reported(tmp_path, monkeypatch):
    """Root ignores permissions, so a refused access check stands in for a read-only folder."""
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(InputError, match=r"^output folder .*: no permission to write in "):
        check_output_folder(tmp_path / "out")
    # Each adapter names the folder in its own spelling; core names no CLI flag.
    with pytest.raises(InputError, match=r"^--output .*: no permission to write in "):
        check_output_folder(tmp_path / "out", "--output")
    assert not (tmp_path / "out").exists()


def fill_the_disk_halfway_through_writes(monkeypatch) -> None:
    """Every Path.write_bytes writes half its data, then fails as a full disk does."""
    real = Path.write_bytes

    def half_then_full(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full)


def test_a_full_disk_leaves_no_truncated_file(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    target.write_text('{"old": "complete"}')
    fill_the_disk_halfway_through_writes(monkeypatch)
    with pytest.raises(OSError):
        atomic_write_text(target, json.dumps({"new": "x" * 10000}))
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": "complete"}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"], "no temporary file left behind"


def test_cli_writes_through_the_atomic_path(tmp_path, tiny_models, monkeypatch):
    """A disk that fills during the CLI's JSON write: the run stops with exit 1, no truncated JSON is left."""
    photos(tmp_path / "in", ("a.jpg",))
    fill_the_disk_halfway_through_writes(monkeypatch)
    status = cli.main(["image", "--prompt", "cat.", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                       "--no-draw", "--quiet", *model_args(tiny_models)])
    monkeypatch.undo()
    assert status == 1
    assert list((tmp_path / "out").iterdir()) == []


def test_one_unusable_image_is_its_own_error_not_its_batchs(tmp_path, tiny_models):
    """A 20000x10 strip in a batch of 4 used to fail all four with transformers' SizeDict message."""
    photos(tmp_path / "in", ("a.png", "b.png", "d.png"))
    Image.fromarray(shapes_image(10, 20000, seed=5)).save(tmp_path / "in" / "c-strip.png")
    result = gsam2("image", "--prompt", "cat.", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                   "--batch-size", "4", "--no-draw", "--box-threshold", "0", "--text-threshold", "0",
                   *model_args(tiny_models))
    assert result.returncode == 1
    assert "images processed: 3" in result.stdout and "failures:         1" in result.stdout
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "c-strip.png" in line and "too elongated for Grounding DINO" in line and "SizeDict" not in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json", "b.json", "d.json"]


@pytest.mark.parametrize(("signal_name", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_image_run_stopped_by_a_signal_ends_with_a_summary(tmp_path, tiny_models, signal_name, status):
    import signal
    import subprocess
    import sys
    import time

    photos(tmp_path / "in", [f"p{i:03d}.png" for i in range(300)])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "gsam2.cli", "image", "--prompt", "cat.", "--input", str(tmp_path / "in"),
               "--output", str(out), "--quiet", *model_args(tiny_models)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob("*.json")) if out.exists() else []) < 3:
        time.sleep(0.1)
    process.send_signal(getattr(signal, signal_name))
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr and "(interrupted)" in stdout and "images processed:" in stdout
    written = sorted(out.glob("*.json"))
    assert 3 <= len(written) < 300
    for path in written:
        json.loads(path.read_text())  # every file on disk is complete
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files left behind"


def test_a_video_whose_results_cannot_be_written_fails_in_one_line(tmp_path, tiny_models, monkeypatch, capsys):
    """A disk that fills in the middle of gsam2 video: one error line and exit 1, no traceback; earlier frames kept."""
    from gsam2.cli import video as video_command

    from .media import write_video

    clip = tmp_path / "clip.mp4"
    write_video(clip, [shapes_image(48, 64, seed=i) for i in range(6)])
    real_record, written = video_command.frame_record, []

    def full_after_two_frames(frame_index, detections):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(frame_index)
        return real_record(frame_index, detections)

    monkeypatch.setattr(video_command, "frame_record", full_after_two_frames)
    status = cli.main(["video", "--prompt", "cat.", "--input", str(clip), "--output", str(tmp_path / "out"),
                       "--no-draw", "--quiet", *model_args(tiny_models), "--tracker", str(tiny_models["sam2-video"])])
    assert status == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("error")]
    assert line.startswith("error: ") and "clip.jsonl: no space left on device" in line
    lines = (tmp_path / "out" / "clip.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame_index"] for line in lines] == [0, 1]
