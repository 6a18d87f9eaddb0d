import tracemalloc

import numpy as np
import pytest

from gsam2.core import InputError
from gsam2.core.video_io import VideoWriter, iter_frames, probe_video

from .media import empty_video, moving_squares, write_video


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt", "exact"),
    [
        ("clip.mp4", "mpeg4", "yuv420p", False),
        ("clip.mkv", "ffv1", "bgr0", True),
        ("clip.avi", "mjpeg", "yuvj420p", False),
    ],
)
def test_containers_and_codecs_decode_in_order(tmp_path, name, codec, pix_fmt, exact):
    frames = list(moving_squares(12))
    path = write_video(tmp_path / name, frames, codec=codec, pix_fmt=pix_fmt)
    info = probe_video(path)
    assert (info.width, info.height) == (96, 64) and info.fps == pytest.approx(25)
    decoded = list(iter_frames(path))
    assert [i for i, _ in decoded] == list(range(12))
    for (_, frame), original in zip(decoded, frames):
        assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8
        if exact:
            np.testing.assert_array_equal(frame, original)
        else:
            assert np.abs(frame.astype(int) - original).mean() < 12


def test_start_stride_and_max(tmp_path):
    path = write_video(tmp_path / "a.mp4", moving_squares(20))
    assert [i for i, _ in iter_frames(path, start_frame=3, stride=5)] == [3, 8, 13, 18]
    assert [i for i, _ in iter_frames(path, max_frames=2)] == [0, 1]
    with pytest.raises(InputError, match="no frames at or after frame 50"):
        list(iter_frames(path, start_frame=50))


def test_decoding_is_a_stream(tmp_path):
    path = write_video(tmp_path / "long.mkv", moving_squares(1500, 32, 48), codec="ffv1", pix_fmt="bgr0")
    tracemalloc.start()
    count = 0
    for _, frame in iter_frames(path):
        count += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 1500
    assert peak < 1500 * frame.nbytes / 20, f"peak {peak} bytes: frames are being kept"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.mp4", "no such file"),
        (lambda p: p, "is a folder"),
        (lambda p: (p / "notes.mp4").write_text("not a video") and p / "notes.mp4", "not a video"),
        # FFmpeg reports a stream with no frames as no video stream at all
        (lambda p: empty_video(p / "empty.mp4"), "has no video stream|video has no frames"),
    ],
)
def test_bad_videos_are_named(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError, match=message):
        probe_video(path)
        list(iter_frames(path))


def test_corrupt_frame_in_the_middle_is_skipped(tmp_path):
    path = write_video(tmp_path / "c.avi", moving_squares(30), codec="mjpeg", pix_fmt="yuvj420p")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 400] = b"\xff" * 400
    path.write_bytes(bytes(data))
    skipped = []
    frames = list(iter_frames(path, on_skip=lambda index, message: skipped.append((index, message))))
    assert len(frames) >= 27, "the rest of the video is still decoded"
    assert len(frames) == 30 or skipped, "a frame that was dropped is reported"


def test_truncated_video_keeps_what_it_has(tmp_path):
    path = write_video(tmp_path / "t.avi", moving_squares(30), codec="mjpeg", pix_fmt="yuvj420p")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    frames = list(iter_frames(path, on_skip=lambda *_: None))
    assert 5 <= len(frames) < 30


def test_writer_round_trip_with_odd_size(tmp_path):
    with VideoWriter(tmp_path / "out.mp4", fps=29.97) as writer:
        for frame in moving_squares(10, 21, 33):
            writer.write(frame)
    info = probe_video(tmp_path / "out.mp4")
    assert (info.height, info.width) == (20, 32), "odd sizes lose a row/column for yuv420p"
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert len(list(iter_frames(tmp_path / "out.mp4"))) == 10
