"""Video in and out as streams: one decoded frame at a time, never the whole video.

Decoding uses PyAV (FFmpeg's libraries, bundled in its wheel), so any container
and codec FFmpeg reads works and nothing is ever extracted to a folder of JPEGs;
a camera index goes through OpenCV. Writing an annotated MP4 uses PyAV too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError
from .images import as_rgb_array, special_file_kind
from .outputs import GSAM2_MARK

DEFAULT_FPS = 30.0
# Seconds to wait for a URL (RTSP, HTTP, TCP...) to answer, then for each read:
# without them FFmpeg waits forever on a camera that went away.
URL_TIMEOUTS = (10.0, 30.0)

OnSkip = Callable[[int | None, str], None]
OnTruncated = Callable[[float, float], None]


@dataclass(frozen=True)
class VideoInfo:
    """What a container says about its first video stream; nothing here needs decoding."""

    source: str  # path or URL as given
    width: int  # as displayed: with the stream's rotation applied (a portrait phone video is taller than wide)
    height: int
    fps: float  # average frame rate; DEFAULT_FPS when the container does not say
    frame_count: int | None  # from the container's metadata (may be approximate); None when it does not say
    rotation: int = 0  # degrees counter-clockwise the player turns the coded frames (0, 90, 180, 270)


def probe_video(source: str | Path) -> VideoInfo:
    """Read a video's size, frame rate and (when recorded) frame count without decoding it.

    Raises:
        InputError: naming the source, if it is missing, a folder, not a video,
            or has no video stream.
    """
    text = _check_source(source)
    container = _open(text)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else DEFAULT_FPS
        frames = int(stream.frames) if stream.frames else None
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        rotation = _first_frame_rotation(container, stream)
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(text, width, height, fps, frames, rotation)
    finally:
        container.close()


def _first_frame_rotation(container, stream) -> int:
    """The display rotation (the container's display matrix, as FFmpeg reports it on decoded frames)."""
    import av

    try:
        frame = next(iter(container.decode(stream)), None)
    except av.FFmpegError:
        frame = None  # the first frame does not decode: no rotation is known (decoding reports the damage)
    return _quarter_turns(frame) * 90 if frame is not None else 0


def _quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns a player applies to show ``frame`` upright (phones record sideways)."""
    return int(round((getattr(frame, "rotation", 0) or 0) / 90)) % 4


def displayed(frame) -> np.ndarray:
    """A decoded frame as RGB, turned as players show it (the rotation in its display matrix applied)."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def iter_frames(
    source: str | Path | int,
    start_frame: int = 0,
    stride: int = 1,
    max_frames: int | None = None,
    on_skip: OnSkip | None = None,
    on_truncated: OnTruncated | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_index, rgb)`` one frame at a time: ``rgb`` is an ``(H, W, 3)`` ``uint8`` array,
    upright as a player shows it (a rotation in the container's display matrix is applied).

    ``source`` is a file path, a URL (anything with ``://``, opened by FFmpeg)
    or a camera index (``int``, read with OpenCV until the camera stops).
    ``frame_index`` is the 0-based position of the frame in the stream, counted
    while decoding (timestamps are not trusted). Frames ``start_frame``,
    ``start_frame + stride``, ... are yielded, at most ``max_frames`` of them;
    the frames in between are decoded but never converted to arrays.

    Data that fails to decode in the middle of a video is skipped and decoding
    goes on: ``on_skip(frame_index, message)`` is told. A packet that fails
    still counts as a frame, so that later indices keep matching the video's
    timeline (a packet holds one frame in MP4, MKV, AVI and the like; with
    B-frames the reported index can be a frame or two early). Frames that a
    demuxer drops without an error (a damaged MKV block) cannot be counted, and
    FFmpeg's H.264 and MPEG-4 decoders often conceal damage silently: those
    frames come out, damaged, and nothing is reported.

    A file read to its end whose container records a duration but no frame
    count (Matroska, WebM, FLV) and whose data stops more than a frame and a
    half before that duration was cut off: ``on_truncated(seconds of data,
    seconds the header gives)`` is told. (An MP4's frame count comes from its
    index: compare it with the frames decoded, :attr:`VideoInfo.frame_count`.)

    Like any generator, nothing is opened or checked until the first frame is
    asked for; the file is closed when the generator ends or is dropped.

    Raises:
        InputError: the source cannot be opened, an argument is out of range,
            or no frame at all is yielded.
    """
    if isinstance(source, bool) or not isinstance(source, (str, Path, int)):
        raise InputError(f"{source!r}: not a video path, URL or camera index")
    if start_frame < 0 or stride < 1 or (max_frames is not None and max_frames < 1):
        raise InputError(
            f"{source}: start_frame must be >= 0, stride >= 1 and max_frames >= 1 or None "
            f"(got {start_frame}, {stride}, {max_frames})"
        )

    def wanted(index: int) -> bool:
        return index >= start_frame and (index - start_frame) % stride == 0

    if isinstance(source, int):
        frames = _camera_frames(source, wanted)
    else:
        frames = _file_frames(_check_source(source), wanted, on_skip, on_truncated)
    yielded = 0
    try:
        for item in frames:
            yield item
            yielded += 1
            if max_frames is not None and yielded >= max_frames:
                return
    finally:
        frames.close()  # closes the container now, even when the caller stops early
    if yielded == 0:
        where = f" at or after frame {start_frame}" if start_frame else ""
        raise InputError(f"{source}: video has no frames{where}")


def _check_source(source: str | Path) -> str:
    text = str(source)
    if not text.strip():
        raise InputError("no video given: the input is an empty path")
    if _is_url(text):
        return text
    path = Path(text)
    if not path.exists():
        raise InputError(f"{text}: no such file")
    if path.is_dir():
        raise InputError(f"{text}: is a folder, not a video file")
    kind = special_file_kind(path)  # FFmpeg would wait forever on a FIFO nobody writes to
    if kind is not None:
        raise InputError(f"{text}: is {kind}, not a video file (a camera is read by its index, a stream by its URL)")
    return text


def _is_url(text: str) -> bool:
    return "://" in text


def _reason(error: Exception) -> str:
    # FFmpeg errors repeat the file name after the reason; the message names it already.
    return getattr(error, "strerror", None) or str(error)


def _open(source: str):
    """Open ``source`` for reading and check that it has a video stream."""
    import av

    url = _is_url(source)
    try:
        container = av.open(source, timeout=URL_TIMEOUTS if url else None)
    except av.error.ExitError as error:
        # What FFmpeg raises when the open timeout runs out.
        raise InputError(f"{source}: no answer within {URL_TIMEOUTS[0]:g} s ({_reason(error)})") from None
    except av.error.EOFError:
        raise InputError(f"{source}: empty or truncated: no video data") from None
    except (av.FFmpegError, OSError, ValueError) as error:
        if url:  # refused, not found, wrong protocol: no file to blame
            raise InputError(f"{source}: cannot open the stream ({_reason(error)})") from None
        # A cut-off MP4/MOV lands here too: its index (the moov atom) is written last.
        raise InputError(
            f"{source}: not a video, a truncated file, or a format PyAV/FFmpeg cannot read ({_reason(error)})"
        ) from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{source}: has no video stream")
    return container


def _header_seconds(container, stream) -> float | None:
    """How long the header says the video stream lasts, where it says so; ``None`` otherwise.

    Matroska records a duration, not a frame count: FFmpeg's and mkvmerge's
    muxers tag each track with its own (``DURATION: 00:00:04.000000000``, read by
    FFmpeg's matroskadec into the stream's metadata). Otherwise the container's
    duration is the video's only when the video is its one stream (an audio
    track may outlast it).
    """
    import av

    tag = stream.metadata.get("DURATION")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            return None
    if container.duration and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def _file_frames(
    source: str, wanted: Callable[[int], bool], on_skip: OnSkip | None, on_truncated: OnTruncated | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    import av

    container = _open(source)
    index = 0
    data_end = None  # in the stream's time base: where the packets read so far end
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads: several times faster on big videos
        # Only files without a frame count (an MP4's index has one) are checked against their header's duration.
        header = None if stream.frames else _header_seconds(container, stream)
        rate = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
        time_base, start = stream.time_base, stream.start_time or 0  # read now: the stream goes with the container
        for packet in container.demux(stream):
            if packet.size and packet.pts is not None:  # decode order: with B-frames a later packet may end earlier
                end = packet.pts + (packet.duration or round(1 / (rate * time_base)))
                data_end = end if data_end is None else max(data_end, end)
            try:
                decoded = packet.decode()
            except av.FFmpegError as error:
                # A corrupt packet: report it and go on with the next one.
                if packet.size:  # the empty packet at the end (which flushes the decoder) is no frame
                    if on_skip is not None:
                        on_skip(index, f"frame {index} could not be decoded ({_reason(error)})")
                    index += 1
                elif on_skip is not None:
                    on_skip(None, f"the last frames could not be decoded ({_reason(error)})")
                continue
            for frame in decoded:
                if wanted(index):
                    yield index, displayed(frame)
                index += 1
    except av.FFmpegError as error:
        # The demuxer itself gave up (a truncated file, a stream that stopped): keep what was read.
        if on_skip is not None:
            on_skip(None, f"stopped reading at frame {index} ({_reason(error)})")
    finally:
        container.close()
    # Read to the end (a consumer that stops early never gets here): did the data reach the header's duration?
    if on_truncated is not None and header is not None:
        read = float((data_end - start) * time_base) if data_end is not None else 0.0
        if header - read > 1.5 / rate:
            on_truncated(read, header)


def _camera_frames(camera: int, wanted: Callable[[int], bool]) -> Iterator[tuple[int, np.ndarray]]:
    import cv2  # opencv-python-headless comes with FiftyOne; only cameras need it

    capture = cv2.VideoCapture(camera)
    try:
        if not capture.isOpened():
            raise InputError(f"camera {camera}: cannot be opened")
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            if wanted(index):
                yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


class VideoWriter:
    """Write RGB frames to an MP4: H.264 (libx264) when PyAV has it, else MPEG-4 Part 2.

    The container follows the file's extension (``.mp4`` for the MP4 above).
    Frames are ``(H, W, 3)`` ``uint8`` RGB; other arrays are converted as
    :func:`~gsam2.core.images.as_rgb_array` does. Without ``width`` and
    ``height`` the size is the first frame's. ``yuv420p`` needs even sizes:
    an odd height or width is cropped by one pixel (the last row or column),
    not padded, so every kept pixel stays where it was in the source; ``size``
    is the ``(height, width)`` actually written.

    Use as a context manager, or call :meth:`close`: the encoder holds the
    last frames until it is flushed, and an MP4 is unreadable until closed.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        width: int | None = None,
        height: int | None = None,
        codec: str | None = None,
        resize_mismatched: bool = False,
    ):
        self.path = Path(path)
        # A stream whose resolution changes midway: resize such frames to the video's size
        # (counted in frames_resized) instead of refusing them.
        self.resize_mismatched = resize_mismatched
        self.frames_resized = 0
        if not self.path.parent.is_dir():
            raise InputError(f"{self.path}: folder {self.path.parent} does not exist")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder, not a video file")
        if (width is None) != (height is None):
            raise InputError(f"{self.path}: give both width and height, or neither")
        # Fractional rates (29.97) must stay exact enough: 2997/100, 30000/1001.
        self.fps = Fraction(fps if fps and fps > 0 else DEFAULT_FPS).limit_denominator(1001)
        self.codec = codec
        self.size: tuple[int, int] | None = None
        self.frames_written = 0
        self._source_size: tuple[int, int] | None = None
        self._container = None
        self._stream = None
        self._closed = False
        if width is not None:
            self._start(int(height), int(width))

    def _start(self, height: int, width: int) -> None:
        import av

        even = (height - height % 2, width - width % 2)
        if min(even) < 2:
            raise InputError(f"{self.path}: frames of {width}x{height} pixels are too small to encode")
        codec = self.codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
        try:
            container = av.open(str(self.path), mode="w")
        except (av.FFmpegError, OSError, ValueError) as error:
            raise InputError(f"{self.path}: cannot write a video there ({_reason(error)})") from None
        try:
            stream = container.add_stream(codec, rate=self.fps)
            stream.height, stream.width = even
            stream.pix_fmt = "yuv420p"
            container.metadata["comment"] = GSAM2_MARK  # a later run knows the file as ours (check_not_foreign)
            if codec == "mpeg4":
                # Its default 200 kbit/s turns HD frames to mush; about 0.2 bit per pixel looks clean.
                stream.bit_rate = max(1_000_000, int(even[0] * even[1] * float(self.fps) * 0.2))
            # Open the encoder and write the header now, so that a codec or a file
            # that cannot be written fails here, not halfway through a video.
            container.start_encoding()
        except (av.FFmpegError, OSError, ValueError) as error:
            container.close()
            raise InputError(f"{self.path}: cannot encode {codec!r} video into this file ({_reason(error)})") from None
        self._container, self._stream = container, stream
        self._source_size, self.size = (height, width), even

    def write(self, rgb: np.ndarray) -> None:
        """Encode one frame; the first one opens the file when no size was given."""
        import av

        if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
            rgb = as_rgb_array(rgb)
        if self._closed:
            raise InputError(f"{self.path}: the writer is closed")
        if self._container is None:
            self._start(*rgb.shape[:2])
        if rgb.shape[:2] != self._source_size and self.resize_mismatched:
            source_height, source_width = self._source_size
            rgb = np.asarray(Image.fromarray(rgb).resize((source_width, source_height), Image.BILINEAR))
            self.frames_resized += 1
        if rgb.shape[:2] != self._source_size:
            raise InputError(
                f"{self.path}: frame {self.frames_written} is {rgb.shape[1]}x{rgb.shape[0]}, "
                f"the video is {self._source_size[1]}x{self._source_size[0]}"
            )
        height, width = self.size
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:height, :width]), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file; calling it again does nothing."""
        self._closed = True
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            for packet in self._stream.encode():  # no frame: flush what the encoder still holds
                container.mux(packet)
        finally:
            container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
