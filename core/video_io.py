"""Video in and out as streams: one decoded frame at a time, never the whole video.

Decoding uses PyAV (FFmpeg's libraries, bundled in its wheel); a camera index
goes through OpenCV. Writing an annotated MP4 uses PyAV too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import InputError

DEFAULT_FPS = 30.0


@dataclass(frozen=True)
class VideoInfo:
    source: str
    width: int
    height: int
    fps: float
    frame_count: int | None  # from the container's metadata; None when it does not say


def _check_path(source: str | Path) -> str:
    text = str(source)
    if "://" in text:
        return text
    path = Path(text)
    if not path.exists():
        raise InputError(f"{text}: no such file")
    if path.is_dir():
        raise InputError(f"{text}: is a folder, not a video file")
    return text


def _open(source: str):
    import av

    try:
        container = av.open(source)
    except av.error.EOFError:
        raise InputError(f"{source}: empty or truncated: no video data") from None
    except (av.FFmpegError, OSError, ValueError) as error:
        raise InputError(f"{source}: not a video, or a format FFmpeg cannot read ({error})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{source}: has no video stream")
    return container


def probe_video(source: str | Path) -> VideoInfo:
    """Read a video's size, frame rate and (when recorded) frame count without decoding it."""
    text = _check_path(source)
    container = _open(text)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else DEFAULT_FPS
        frames = int(stream.frames) if stream.frames else None
        return VideoInfo(text, int(stream.codec_context.width), int(stream.codec_context.height), fps, frames)
    finally:
        container.close()


def iter_frames(
    source: str | Path | int,
    start_frame: int = 0,
    stride: int = 1,
    max_frames: int | None = None,
    on_skip: Callable[[int | None, str], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_index, rgb uint8 array)`` one frame at a time.

    ``frame_index`` is the 0-based position in the stream. Data that fails to
    decode in the middle of a video is skipped (``on_skip(index, message)`` is
    told) and decoding goes on. A camera index (``int``) is read with OpenCV
    until the camera stops.

    Raises:
        InputError: the source cannot be opened, or yields no frames at all.
    """
    if stride < 1 or start_frame < 0:
        raise InputError(f"{source}: start frame must be >= 0 and stride >= 1")
    frames = _camera_frames(source) if isinstance(source, int) else _file_frames(_check_path(source), on_skip)
    yielded = 0
    try:
        for index, frame in frames:
            if index < start_frame or (index - start_frame) % stride:
                continue
            yield index, frame
            yielded += 1
            if max_frames is not None and yielded >= max_frames:
                return
    finally:
        frames.close()
    if yielded == 0:
        where = f" at or after frame {start_frame}" if start_frame else ""
        raise InputError(f"{source}: video has no frames{where}")


def _file_frames(source: str, on_skip) -> Iterator[tuple[int, np.ndarray]]:
    import av

    container = _open(source)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.FFmpegError as error:
                # A corrupt packet: say so and keep going with the next one.
                if on_skip is not None:
                    on_skip(index, f"undecodable packet after frame {index - 1}: {error}")
                continue
            for frame in decoded:
                yield index, frame.to_ndarray(format="rgb24")
                index += 1
    except av.FFmpegError as error:
        if on_skip is not None:
            on_skip(None, f"stopped reading at frame {index}: {error}")
    finally:
        container.close()


def _camera_frames(camera: int) -> Iterator[tuple[int, np.ndarray]]:
    import cv2

    capture = cv2.VideoCapture(camera)
    if not capture.isOpened():
        raise InputError(f"camera {camera}: cannot be opened")
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


class VideoWriter:
    """Write RGB frames to an MP4 (H.264 when available, else MPEG-4 Part 2)."""

    def __init__(self, path: str | Path, fps: float, codec: str | None = None):
        self.path = Path(path)
        self.fps = Fraction(fps if fps and fps > 0 else DEFAULT_FPS).limit_denominator(1001)
        self.codec = codec
        self._container = None
        self._stream = None
        self.size: tuple[int, int] | None = None

    def _start(self, height: int, width: int) -> None:
        import av

        codec = self.codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream(codec, rate=self.fps)
        # yuv420p needs even sizes: odd frames lose their last row/column.
        self.size = (height - height % 2, width - width % 2)
        self._stream.height, self._stream.width = self.size
        self._stream.pix_fmt = "yuv420p"

    def write(self, rgb: np.ndarray) -> None:
        import av

        if self._container is None:
            self._start(*rgb.shape[:2])
        height, width = self.size
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:height, :width]), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
