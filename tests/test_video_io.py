"""Video in and out: containers and codecs, streaming memory, broken files, the MP4 writer."""

from __future__ import annotations

import socket
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
from gsam2.core import InputError, video_io
from gsam2.core.video_io import VideoWriter, iter_frames, probe_video

from .media import empty_video, moving_squares, write_video

HAS_X264 = "libx264" in av.codecs_available

# (file name, codec, pix_fmt, lossless, frame count the container records)
FORMATS = [
    ("clip.mp4", "mpeg4", "yuv420p", False, 12),
    pytest.param(
        "clip264.mp4", "libx264", "yuv420p", False, 12, marks=pytest.mark.skipif(not HAS_X264, reason="no libx264")
    ),
    ("clip.mkv", "ffv1", "bgr0", True, None),  # Matroska records no frame count
    ("clip.avi", "mjpeg", "yuvj420p", False, 12),
]


def packet_positions(path: Path) -> list[tuple[int, int]]:
    """``(byte offset, size)`` of each video packet, in file order."""
    with av.open(str(path)) as container:
        return [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]


def close_to(frame: np.ndarray, original: np.ndarray) -> bool:
    """Lossy codecs: the same picture, give or take compression noise."""
    return frame.shape == original.shape and np.abs(frame.astype(int) - original).mean() < 12


@pytest.mark.parametrize(("name", "codec", "pix_fmt", "exact", "count"), FORMATS)
def test_containers_and_codecs_decode_in_order(tmp_path, name, codec, pix_fmt, exact, count):
    frames = list(moving_squares(12))
    path = write_video(tmp_path / name, frames, codec=codec, pix_fmt=pix_fmt)
    info = probe_video(path)
    assert info == video_io.VideoInfo(str(path), 96, 64, pytest.approx(25), count)
    decoded = list(iter_frames(path))
    assert [i for i, _ in decoded] == list(range(12))
    for (_, frame), original in zip(decoded, frames):
        assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8
        if exact:
            np.testing.assert_array_equal(frame, original)
        else:
            assert close_to(frame, original)


def test_start_stride_and_max_pick_the_right_frames(tmp_path):
    originals = list(moving_squares(20))
    path = write_video(tmp_path / "a.mkv", originals, codec="ffv1", pix_fmt="bgr0")
    picked = list(iter_frames(path, start_frame=3, stride=5))
    assert [i for i, _ in picked] == [3, 8, 13, 18]
    for index, frame in picked:
        np.testing.assert_array_equal(frame, originals[index])  # the index is the frame's real position
    assert [i for i, _ in iter_frames(path, max_frames=2)] == [0, 1]
    assert [i for i, _ in iter_frames(path, start_frame=4, stride=3, max_frames=3)] == [4, 7, 10]
    assert [i for i, _ in iter_frames(path, start_frame=19)] == [19]
    with pytest.raises(InputError, match="no frames at or after frame 20"):
        list(iter_frames(path, start_frame=20))
    for bad in ({"stride": 0}, {"start_frame": -1}, {"max_frames": 0}):
        with pytest.raises(InputError, match="stride >= 1"):
            list(iter_frames(path, **bad))


def test_decoding_is_a_stream(tmp_path):
    frames = 2000
    path = write_video(tmp_path / "long.mkv", moving_squares(frames, 32, 32), codec="ffv1", pix_fmt="bgr0")
    tracemalloc.start()  # numpy's buffers are traced: keeping decoded frames would show
    count = 0
    for _, frame in iter_frames(path):
        count += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == frames
    assert peak < frames * frame.nbytes / 20, f"peak {peak} bytes: frames are being kept"


def test_stopping_early_closes_the_file(tmp_path, monkeypatch):
    path = write_video(tmp_path / "a.mp4", moving_squares(30))
    closed = []
    real_open = av.open

    def open_and_watch(*args, **kwargs):
        container = real_open(*args, **kwargs)
        real_close = container.close
        return type(
            "Watched",
            (),
            {
                "streams": container.streams,
                "demux": container.demux,
                "close": lambda self: (closed.append(True), real_close()),
            },
        )()

    monkeypatch.setattr(av, "open", open_and_watch)
    frames = iter_frames(path)
    assert not closed, "nothing is opened before the first frame is asked for"
    index, _ = next(frames)
    assert index == 0 and not closed
    frames.close()
    assert closed == [True]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.mp4", "missing.mp4: no such file"),
        (lambda p: p, "is a folder"),
        (lambda p: (p / "notes.mp4").write_text("not a video") and p / "notes.mp4", "notes.mp4: not a video"),
        (lambda p: (p / "zero.mp4").write_bytes(b"") is not None and p / "zero.mp4", "zero.mp4: not a video"),
        # FFmpeg's MP4 muxer leaves a stream without samples out of the file,
        (lambda p: empty_video(p / "empty.mp4"), "empty.mp4: has no video stream"),
        # and an MKV with no block in it ends before its first cluster.
        (lambda p: empty_video(p / "empty.mkv"), "empty.mkv: empty or truncated"),
    ],
)
def test_bad_videos_are_named(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError, match=message):
        probe_video(path)
    with pytest.raises(InputError, match=message):
        list(iter_frames(path))


def test_a_stream_without_frames_has_no_frames(tmp_path):
    # AVI keeps the stream header of a video that never got a frame.
    path = empty_video(tmp_path / "empty.avi")
    assert (probe_video(path).width, probe_video(path).frame_count) == (32, None)
    with pytest.raises(InputError, match=r"empty.avi: video has no frames$"):
        list(iter_frames(path))


def test_truncated_mp4_is_an_error_but_truncated_avi_and_mkv_keep_their_frames(tmp_path):
    originals = list(moving_squares(30))
    for name, codec, pix_fmt in [
        ("t.mp4", "mpeg4", "yuv420p"),
        ("t.avi", "mjpeg", "yuvj420p"),
        ("t.mkv", "ffv1", "bgr0"),
    ]:
        path = write_video(tmp_path / name, originals, codec=codec, pix_fmt=pix_fmt)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.6)])
        if name.endswith(".mp4"):
            # The MP4 index (moov) is written last: without it nothing can be read.
            with pytest.raises(InputError, match="t.mp4: not a video, a truncated file"):
                probe_video(path)
            continue
        frames = list(iter_frames(path, on_skip=lambda *_: None))
        assert 10 <= len(frames) < 30, name
        assert all(close_to(frame, originals[i]) for i, frame in frames[:-1]), name  # the last may be partial


@pytest.mark.parametrize(("codec", "pix_fmt"), [("ffv1", "bgr0"), ("mpeg4", "yuv420p")])
def test_a_truncated_mkv_is_told_by_its_header_duration(tmp_path, codec, pix_fmt):
    """Matroska records a duration, not a frame count: a cut-off file used to end early without a word."""
    path = write_video(tmp_path / "t.mkv", moving_squares(100), codec=codec, pix_fmt=pix_fmt)
    told = []
    assert len(list(iter_frames(path, on_truncated=lambda *seconds: told.append(seconds)))) == 100
    assert told == [], "a whole file is not truncated"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    frames = list(iter_frames(path, on_skip=lambda *_: None, on_truncated=lambda *seconds: told.append(seconds)))
    assert 0 < len(frames) < 100
    [(read, header)] = told
    assert header == pytest.approx(4.0) and read == pytest.approx(len(frames) / 25, abs=0.1)


def test_a_corrupt_frame_is_skipped_and_later_frames_keep_their_index(tmp_path):
    originals = list(moving_squares(30))
    path = write_video(tmp_path / "c.avi", originals, codec="mjpeg", pix_fmt="yuvj420p")
    offset, size = packet_positions(path)[15]
    data = bytearray(path.read_bytes())
    data[offset + size // 4 : offset + 3 * size // 4] = bytes(i * 37 % 251 for i in range(size // 2))
    path.write_bytes(bytes(data))
    skipped = []
    frames = list(iter_frames(path, on_skip=lambda index, message: skipped.append((index, message))))
    assert [i for i, _ in frames] == [i for i in range(30) if i != 15]
    assert all(close_to(frame, originals[i]) for i, frame in frames)
    assert len(skipped) == 1 and skipped[0][0] == 15 and "frame 15 could not be decoded" in skipped[0][1]


@pytest.mark.parametrize(("name", "codec", "pix_fmt", "exact", "count"), FORMATS)
def test_garbage_in_the_middle_does_not_stop_decoding(tmp_path, name, codec, pix_fmt, exact, count):
    originals = list(moving_squares(30))
    path = write_video(tmp_path / name, originals, codec=codec, pix_fmt=pix_fmt)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = b"\xff" * 200
    path.write_bytes(bytes(data))
    skipped = []
    frames = list(iter_frames(path, on_skip=lambda index, message: skipped.append(index)))
    # What is lost depends on the codec (H.264 loses the frames that refer to the broken one,
    # Matroska's demuxer drops a run of blocks silently, MPEG-4 conceals); the end is always reached.
    assert len(frames) >= 15
    assert close_to(frames[-1][1], originals[-1]), "decoding went on to the last frame"
    if name.endswith(".avi"):  # one JPEG per packet: exactly one frame lost, and reported
        assert len(frames) >= 27 and (len(frames) == 30 or skipped)


def test_writer_round_trip_with_odd_size(tmp_path):
    originals = list(moving_squares(10, 21, 33))
    with VideoWriter(tmp_path / "out.mp4", fps=29.97) as writer:
        for frame in originals:
            writer.write(frame)
    assert writer.size == (20, 32) and writer.frames_written == 10
    info = probe_video(tmp_path / "out.mp4")
    assert (info.height, info.width) == (20, 32), "odd sizes lose their last row/column for yuv420p"
    assert info.fps == pytest.approx(29.97, abs=0.001)
    assert info.frame_count == 10
    frames = list(iter_frames(tmp_path / "out.mp4"))
    assert [i for i, _ in frames] == list(range(10))
    assert all(close_to(frame, originals[i][:20, :32]) for i, frame in frames)
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.streams.video[0].codec_context.name == ("h264" if HAS_X264 else "mpeg4")


def test_writer_with_a_given_size_and_codec(tmp_path):
    path = tmp_path / "out.mp4"
    writer = VideoWriter(path, fps=12.5, width=48, height=32, codec="mpeg4")
    assert path.exists() and writer.size == (32, 48), "a given size opens the file at once"
    writer.write(np.zeros((32, 48), np.uint8))  # gray and float frames are converted
    writer.write(np.ones((32, 48, 3), np.float32) * 0.5)
    with pytest.raises(InputError, match=r"out.mp4: frame 2 is 64x32, the video is 48x32"):
        writer.write(np.zeros((32, 64, 3), np.uint8))
    writer.close()
    writer.close()  # twice is fine
    with pytest.raises(InputError, match="closed"):
        writer.write(np.zeros((32, 48, 3), np.uint8))
    info = probe_video(path)
    assert (info.width, info.height, info.fps, info.frame_count) == (48, 32, 12.5, 2)
    means = [frame.mean() for _, frame in iter_frames(path)]
    assert means[0] < 5 and 120 < means[1] < 135


def test_writer_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="folder .*missing does not exist"):
        VideoWriter(tmp_path / "missing" / "out.mp4", fps=25)
    with pytest.raises(InputError, match="give both width and height"):
        VideoWriter(tmp_path / "out.mp4", fps=25, width=32)
    with pytest.raises(InputError, match=r"out.xyz: cannot write a video there"):
        VideoWriter(tmp_path / "out.xyz", fps=25).write(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match=r"out.mp4: cannot encode 'no-such-codec' video"):
        VideoWriter(tmp_path / "out.mp4", fps=25, width=8, height=8, codec="no-such-codec")
    with pytest.raises(InputError, match="too small"):
        VideoWriter(tmp_path / "out.mp4", fps=25).write(np.zeros((1, 8, 3), np.uint8))


def test_file_url_is_read_as_a_stream(tmp_path):
    path = write_video(tmp_path / "s.mp4", moving_squares(6))
    url = f"file://{path}"
    assert (probe_video(url).source, probe_video(url).width) == (url, 96)
    assert [i for i, _ in iter_frames(url, stride=2)] == [0, 2, 4]


def test_url_that_never_answers_times_out(monkeypatch):
    monkeypatch.setattr(video_io, "URL_TIMEOUTS", (0.3, 0.3))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # accepts the connection, never sends a byte
        url = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(InputError, match=r"tcp://127.0.0.1:\d+: no answer within 0.3 s"):
            probe_video(url)
    with pytest.raises(InputError, match="cannot open the stream"):
        probe_video("tcp://127.0.0.1:1")  # nothing listens on port 1


def test_missing_camera_is_named():
    with pytest.raises(InputError, match="camera 99: cannot be opened"):
        next(iter_frames(99))


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied_like_a_player(tmp_path, rotation):
    """A portrait phone video (display matrix rotation 90) is coded sideways: frames come out upright."""
    coded = np.full((48, 64, 3), 40, np.uint8)
    coded[:16, :16] = (230, 30, 30)  # a red block in the coded frame's top-left corner
    path = write_video(tmp_path / "phone.mp4", [coded] * 3, rotation=rotation)
    info = probe_video(path)
    assert info.rotation == rotation
    assert (info.height, info.width) == ((64, 48) if rotation in (90, 270) else (48, 64))
    frames = [frame for _, frame in iter_frames(path)]
    assert len(frames) == 3 and frames[0].shape == (info.height, info.width, 3)
    expected = np.rot90(coded, rotation // 90)  # counter-clockwise quarter turns
    red = frames[0][..., 0] > 150
    np.testing.assert_array_equal(red, expected[..., 0] > 150)
