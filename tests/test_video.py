"""Video end to end with tiny real models: the CLI, bounded memory, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import psutil
import pytest

from gsam2.core import rle_to_mask
from gsam2.core.backends import load_tracker
from gsam2.core.video_io import iter_frames, probe_video
from gsam2.core.video_pipeline import BoxPrompt, track_from_boxes

from .media import empty_video, moving_squares, write_video
from .test_cli import gsam2


def gsam2_video(tiny_models, *args):
    command = [
        sys.executable,
        "-m",
        "gsam2.cli",
        "video",
        "--detector",
        str(tiny_models["grounding-dino"]),
        "--segmenter",
        str(tiny_models["sam2"]),
        "--tracker",
        str(tiny_models["sam2-video"]),
        "--device",
        "cpu",
        "--quiet",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=600)


@pytest.mark.parametrize(("name", "codec", "pix_fmt"), [("clip.mp4", "mpeg4", "yuv420p"), ("clip.mkv", "ffv1", "bgr0")])
def test_cli_video_end_to_end(tmp_path, tiny_models, name, codec, pix_fmt):
    video = write_video(tmp_path / name, moving_squares(12), codec=codec, pix_fmt=pix_fmt)
    out = tmp_path / "out"
    result = gsam2_video(
        tiny_models,
        "--prompt",
        "red square. car.",
        "--input",
        str(video),
        "--output",
        str(out),
        "--box-threshold",
        "0.7",
        "--text-threshold",
        "0",
        "--step",
        "5",
        "--reverse",
    )
    assert result.returncode == 0, result.stderr
    assert "frames processed: 12" in result.stdout
    lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [line["frame_index"] for line in lines] == list(range(12))
    ids = set()
    for line in lines:
        frame_ids = [obj["id"] for obj in line["objects"]]
        assert len(frame_ids) == len(set(frame_ids)), "one entry per object per frame"
        for obj in line["objects"]:
            assert obj["class_name"] in {"red square", "car"}
            assert rle_to_mask(obj["segmentation"]).shape == (64, 96)
            ids.add(obj["id"])
    assert f"objects tracked:  {len(ids)}" in result.stdout
    info = probe_video(out / "clip.mp4")
    assert (info.width, info.height) == (96, 64)
    assert len(list(iter_frames(out / "clip.mp4"))) == 12


def test_cli_video_stride_start_and_nothing_found(tmp_path, tiny_models):
    video = write_video(tmp_path / "v.mp4", moving_squares(20))
    result = gsam2_video(
        tiny_models,
        "--prompt",
        "car",
        "--input",
        str(video),
        "--output",
        str(tmp_path / "out"),
        "--box-threshold",
        "1.0",
        "--start-frame",
        "3",
        "--stride",
        "4",
        "--no-draw",
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "out" / "v.jsonl").read_text().splitlines()]
    assert [line["frame_index"] for line in lines] == [3, 7, 11, 15, 19]
    assert all(line["objects"] == [] for line in lines), "a prompt that finds nothing is an empty track set"
    assert not (tmp_path / "out" / "v.mp4").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: (p / "x.mp4").write_text("nope") and p / "x.mp4", "not a video"),
        (lambda p: empty_video(p / "e.mp4"), "has no video stream"),
        (lambda p: p / "missing.mp4", "no such file"),
    ],
)
def test_cli_video_bad_input(tmp_path, tiny_models, make, message):
    result = gsam2_video(
        tiny_models, "--prompt", "car", "--input", str(make(tmp_path)), "--output", str(tmp_path / "o")
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_tracking_memory_does_not_grow_with_video_length(tmp_path, tiny_models):
    """2,000 frames through the real (tiny) SAM 2 video model: resident memory stays flat."""
    frames = 2000
    video = write_video(tmp_path / "long.mkv", moving_squares(frames, 32, 48), codec="ffv1", pix_fmt="bgr0")
    tracker = load_tracker(str(tiny_models["sam2-video"]), device="cpu")
    process = psutil.Process()
    rss = {}
    for result in track_from_boxes(iter_frames(video), [BoxPrompt(0, np.array([4, 8, 20, 24]), "red")], tracker):
        if result.frame_index in (300, frames - 1):
            rss[result.frame_index] = process.memory_info().rss
    growth_mb = (rss[frames - 1] - rss[300]) / 2**20
    print(f"RSS growth from frame 300 to {frames - 1}: {growth_mb:.1f} MiB")
    # Without pruning, transformers keeps every frame (3x256x256 float32 = 0.75 MiB here) and every
    # frame's memory: 1,700 frames would add well over 1 GiB.
    assert growth_mb < 100


def test_stream_url_is_read_as_a_live_source(tmp_path):
    video = write_video(tmp_path / "s.mp4", moving_squares(6))
    frames = list(iter_frames(f"file://{video}"))
    assert [i for i, _ in frames] == list(range(6))


@pytest.mark.parametrize(("signal_name", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_or_sigterm_stops_cleanly_and_keeps_what_was_done(tmp_path, tiny_models, signal_name, status):
    """Ctrl-C, and SIGTERM as timeout, docker stop and Slurm send it: a finalised MP4 and 128 + the signal."""
    import signal
    import time

    video = write_video(tmp_path / "live.mkv", moving_squares(3000, 32, 48), codec="ffv1", pix_fmt="bgr0")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "gsam2.cli",
        "video",
        "--prompt",
        "red square",
        "--input",
        f"file://{video}",
        "--output",
        str(out),
        "--detector",
        str(tiny_models["grounding-dino"]),
        "--segmenter",
        str(tiny_models["sam2"]),
        "--tracker",
        str(tiny_models["sam2-video"]),
        "--device",
        "cpu",
        "--quiet",
        "--box-threshold",
        "0.9",
        "--text-threshold",
        "0",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    jsonl = out / "live.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not jsonl.exists() or len(jsonl.read_text().splitlines()) < 5):
        time.sleep(0.2)
    process.send_signal(getattr(signal, signal_name))
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert "(interrupted)" in stdout
    lines = jsonl.read_text().splitlines()
    assert 5 <= len(lines) < 3000
    assert all(json.loads(line)["frame_index"] == i for i, line in enumerate(lines))
    assert len(list(iter_frames(out / "live.mp4"))) == len(lines), "the MP4 is finalised, not cut off"


@pytest.mark.parametrize(("signal_name", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_stops_the_wait_for_a_stream_that_does_not_answer(tmp_path, signal_name, status):
    """PyAV held the open of a silent URL for its 10 s timeout and lost a signal that came meanwhile (exit 2)."""
    import signal
    import socket
    import time

    with socket.socket() as probe:  # a free port, for FFmpeg to listen on: nobody ever connects
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "gsam2.cli", "video", "--input", f"tcp://127.0.0.1:{port}?listen=1",
               "--output", str(tmp_path / "out"), "--prompt", "car", "--detector", str(tmp_path / "no-model")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    listening = False
    deadline = time.monotonic() + 120
    while not listening and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        connections = psutil.Process(process.pid).net_connections(kind="tcp")
        listening = any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)
    assert listening, "gsam2 video never waited on the stream"
    process.send_signal(getattr(signal, signal_name))
    sent = time.monotonic()
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert time.monotonic() - sent < 5 and "interrupted" in stderr


def test_pruned_memory_gives_the_same_masks_as_full_memory_when_a_keyframe_is_re_run(tiny_models):
    """New objects on a late keyframe re-run that frame without a new image (streaming off).

    transformers then takes len(processed_frames) as the video length; the
    session prunes old frames, so it must still report the full length or the
    re-run silently loses the recent memories of the objects already tracked.
    (With the tiny random model those lost pointers do not change the masks, so
    the reported length is what fails without the fix; equal masks show the fix
    changes nothing else.)
    """
    tracker = load_tracker(str(tiny_models["sam2-video"]), device="cpu")
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (64, 80, 3), dtype=np.uint8) for _ in range(40)]
    box_a, box_b = np.array([[5, 5, 30, 30]], float), np.array([[40, 20, 70, 50]], float)

    def run(prune: bool) -> list[np.ndarray]:
        session = tracker.start()
        if not prune:
            session.history = 10**9
        session.prompt(0, [1], boxes=box_a)
        masks = []
        for index, frame in enumerate(frames):
            tracked = session.step(index, frame)
            if index == 30:  # a keyframe finds a second object: re-run the frame with its prompt
                session.prompt(30, [2], boxes=box_b)
                tracked = session.step(30)
            masks.append(tracked.masks.copy())
        return masks, session.session.processed_frames

    (pruned, pruned_frames), (full, _) = run(prune=True), run(prune=False)
    for index in range(30, 40):
        np.testing.assert_array_equal(pruned[index], full[index], err_msg=f"frame {index}")
    assert len(dict.keys(pruned_frames)) < 20, "old frames are still pruned"
    assert len(pruned_frames) == len(frames)


def video_args(tiny_models, *extra):
    return ["--prompt", "red square", "--detector", str(tiny_models["grounding-dino"]), "--segmenter",
            str(tiny_models["sam2"]), "--tracker", str(tiny_models["sam2-video"]), "--device", "cpu", "--quiet", *extra]


def test_a_truncated_video_reports_its_missing_frames_and_exits_1(tmp_path, tiny_models):
    """The index (moov first) lists 40 frames; the file is cut halfway through its data."""
    import av

    full = tmp_path / "full.mp4"
    container = av.open(str(full), mode="w", options={"movflags": "faststart"})
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
    for image in moving_squares(40):
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    result = gsam2("video", "--input", str(cut), "--output", str(tmp_path / "out"), "--no-draw",
                   *video_args(tiny_models))
    assert result.returncode == 1, result.stderr
    processed = int(next(line for line in result.stdout.splitlines() if line.startswith("frames processed")).split()[2])
    assert 0 < processed < 40
    assert f"frames missing:   {40 - processed} of 40" in result.stdout


def test_a_truncated_mkv_reports_its_missing_frames_and_exits_1(tmp_path, tiny_models):
    """Its header says 1.6 s (40 frames at 25 fps) and has no frame count; half the file is left."""
    full = write_video(tmp_path / "full.mkv", moving_squares(40), codec="ffv1", pix_fmt="bgr0")
    data = full.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    result = gsam2("video", "--input", str(cut), "--output", str(tmp_path / "out"), "--no-draw",
                   *video_args(tiny_models, "--box-threshold", "1"))  # nothing to track: only the reading matters
    assert result.returncode == 1, result.stderr
    processed = int(next(line for line in result.stdout.splitlines() if line.startswith("frames processed")).split()[2])
    assert 0 < processed < 40
    assert (f"frames missing:   about {40 - processed} (the file ends at {processed / 25:.2f} s, its header says "
            "1.60 s: truncated?)") in result.stdout


@pytest.mark.parametrize(("start", "message"), [("40", "has 10 frames"), ("-1", "is negative")])
def test_start_frame_out_of_range_is_a_usage_error_before_any_work(tmp_path, tiny_models, start, message):
    video = write_video(tmp_path / "v.mp4", moving_squares(10))
    result = gsam2("video", "--input", str(video), "--output", str(tmp_path / "out"), f"--start-frame={start}",
                   "--prompt", "x", "--detector", str(tmp_path / "no-such-model"))
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_no_camera_is_a_usage_error_before_any_work(tmp_path):
    result = gsam2("video", "--input", "7", "--output", str(tmp_path / "out"), "--prompt", "x",
                   "--detector", str(tmp_path / "no-such-model"))
    assert result.returncode == 2 and "no camera with this index" in result.stderr


def test_a_one_pixel_video_keeps_its_results_without_a_drawing(tmp_path, tiny_models):
    video = write_video(tmp_path / "dot.mkv", [np.full((1, 1, 3), 200, np.uint8)] * 4, codec="ffv1", pix_fmt="bgr0")
    result = gsam2("video", "--input", str(video), "--output", str(tmp_path / "out"), *video_args(tiny_models))
    assert result.returncode == 0, result.stderr
    assert "no annotated video" in result.stderr and "too small to encode" in result.stderr
    assert len((tmp_path / "out" / "dot.jsonl").read_text().splitlines()) == 4


def test_an_empty_input_is_named_as_such(tmp_path):
    result = gsam2("video", "--input", "", "--output", str(tmp_path / "out"), "--prompt", "x",
                   "--detector", str(tmp_path / "no-such-model"))
    assert result.returncode == 2 and "no video given: the input is an empty path" in result.stderr
