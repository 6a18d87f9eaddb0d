"""Small videos the tests generate: coloured squares that move, enter and leave."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def moving_squares(frames: int, height: int = 64, width: int = 96):
    """Yield RGB frames: red moves right, green enters at frame ``frames // 3``, blue leaves at ``2 * frames // 3``."""
    for t in range(frames):
        image = np.full((height, width, 3), 30, np.uint8)
        x = (4 + t) % (width - 16)
        image[8:24, x : x + 16] = (230, 30, 30)
        if t >= frames // 3:
            image[36:52, 60:76] = (30, 230, 30)
        if t < 2 * frames // 3:
            image[40:56, 8:24] = (30, 30, 230)
        yield image


def write_video(
    path: Path, frames, fps: int = 25, codec: str = "mpeg4", pix_fmt: str = "yuv420p", rotation: int = 0
) -> Path:
    """Encode frames with PyAV; the container comes from the file extension.

    ``rotation``: degrees counter-clockwise a player turns the frames (a display
    matrix, as phones write for portrait videos).
    """
    container = av.open(str(path), mode="w")
    stream = None
    for image in frames:
        if stream is None:
            stream = container.add_stream(codec, rate=fps)
            stream.height, stream.width = image.shape[:2]
            stream.pix_fmt = pix_fmt
            if rotation:
                stream.set_display_rotation(rotation)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    if stream is not None:
        for packet in stream.encode():
            container.mux(packet)
    container.close()
    return path


def empty_video(path: Path) -> Path:
    """A container with a video stream and no frames."""
    container = av.open(str(path), mode="w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.height, stream.width, stream.pix_fmt = 32, 32, "yuv420p"
    container.start_encoding()  # header written, no frame ever encoded
    container.close()
    return path
