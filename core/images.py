"""Reading images the way a viewer shows them.

Every loader in the project goes through :func:`load_image`, which returns an
RGB ``uint8`` array in display orientation (EXIF rotation applied) whatever the
file holds: grayscale, palette, RGBA, 16-bit or float (scaled by the data's
range, see :func:`high_bit_depth_to_uint8`) or CMYK. Masks computed on that
array therefore line up with the image a person sees in FiftyOne or CVAT.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .errors import InputError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".jfif", ".pbm", ".pgm", ".ppm"}
)

_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}

# The largest image read, in pixels: 250 MP by default, so 108 and 200 MP phone photos pass
# (Pillow's own limit, 89.5 MP, warns above it and refuses above twice that). Decoded as RGB,
# 250 MP is 750 MB. Set GSAM2_MAX_IMAGE_PIXELS, or PIL.Image.MAX_IMAGE_PIXELS yourself.
DEFAULT_MAX_IMAGE_PIXELS = 250_000_000
_PILLOW_DEFAULT_LIMIT = int(1024 * 1024 * 1024 // 4 // 3)
if Image.MAX_IMAGE_PIXELS == _PILLOW_DEFAULT_LIMIT:  # left alone if the application chose its own
    Image.MAX_IMAGE_PIXELS = int(os.environ.get("GSAM2_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS))


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_file_kind(path: str | Path) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder (``"a FIFO (named pipe)"``,
    a device, a socket); ``None`` otherwise.

    Opening or reading such a file can block forever (a FIFO nobody writes to, a
    terminal) or never end (``/dev/zero``), so inputs are checked with this before
    they are opened: ``os.stat`` follows symlinks and never opens the file.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing, unreadable folder, a NUL in the name: the open reports it
        return None
    return next((kind for test, kind in _SPECIAL_FILES if test(mode)), None)


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert any PIL image to an ``(H, W, 3)`` ``uint8`` RGB array, EXIF rotation applied."""
    # Only when the EXIF asks for a turn: otherwise exif_transpose returns a full copy of the image.
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        # PIL's own convert("RGB") clips 16-bit values to 255, which turns most
        # 16-bit images white; scale the data's range down instead.
        gray = high_bit_depth_to_uint8(np.asarray(image), floating=image.mode == "F")
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode != "RGB":  # convert("RGB") of an RGB image is one more copy
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)  # writable, and ours


def as_rgb_array(image: np.ndarray | Image.Image) -> np.ndarray:
    """Accept a PIL image or an array (H×W gray, H×W×3 RGB, H×W×4 RGBA) and return RGB ``uint8``."""
    if isinstance(image, Image.Image):
        return to_rgb_array(image)
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise InputError(f"image array has shape {array.shape}; expected H×W, H×W×3 or H×W×4")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"image array has shape {array.shape}: it has no pixels")
    if array.dtype != np.uint8:
        array = high_bit_depth_to_uint8(array, floating=np.issubdtype(array.dtype, np.floating))
    return np.ascontiguousarray(array[:, :, :3])


# Bit depths that cameras and scientific formats store in 16- and 32-bit containers.
_BIT_DEPTHS = (10, 12, 14, 16, 24, 32)


def high_bit_depth_to_uint8(values: np.ndarray, floating: bool) -> np.ndarray:
    """Scale pixel values with more than 8 bits into ``uint8`` by the data's range.

    - floating-point data with its brightest value at most 1.0 is read as [0, 1];
    - values that fit in 0-255 are kept;
    - otherwise the data is read as the smallest of 10, 12, 14, 16, 24 or 32 bits
      that holds its brightest value (12-bit sensor data in a 16-bit PNG: 4095 is white).
    Negative values become 0.
    """
    data = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(data.max(initial=0.0))
    if floating and peak <= 1.0:
        scale = 255.0
    elif peak <= 255.0:
        scale = 1.0
    else:
        bits = next((b for b in _BIT_DEPTHS if peak < 2**b), 64)
        scale = 255.0 / (2.0**bits - 1)
    return np.clip(np.round(data * scale), 0, 255).astype(np.uint8)


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes (e.g. a request body) into RGB ``uint8``; ``name`` goes in errors."""
    return _decode(lambda: Image.open(io.BytesIO(data)), name)


def load_image(path: str | Path, on_several_frames: Callable[[], None] | None = None) -> np.ndarray:
    """Read an image file into an RGB ``uint8`` array in display orientation.

    A file of several frames (an animated GIF, WebP or PNG, a multi-page TIFF)
    gives its first frame; ``on_several_frames()`` is then called, so that a
    caller can say so.

    Raises:
        InputError: naming the file, if it is missing, not an image, truncated,
            or larger than PIL's decompression-bomb limit.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    kind = special_file_kind(path)
    if kind is not None:
        raise InputError(f"{path}: is {kind}, not an image file")
    return _decode(lambda: Image.open(path), str(path), on_several_frames)


def _several_frames(image: Image.Image) -> bool:
    """Whether the file holds more frames than the one read (PIL's ``is_animated``: GIF, WebP, PNG, TIFF, MPO)."""
    try:
        # GIF finds out by reading the second frame's header (GifImagePlugin.is_animated); TIFF knows from its IFDs.
        return bool(getattr(image, "is_animated", False))
    except (OSError, EOFError, SyntaxError, ValueError):  # a damaged later frame: the first was read all the same
        return False


def _decode(open_image, name: str, on_several_frames: Callable[[], None] | None = None) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its pixel limit; treat both as errors
            # so that a huge image fails cleanly instead of exhausting memory later.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_image() as image:
                image.load()
                rgb = to_rgb_array(image)
                if on_several_frames is not None and _several_frames(image):
                    on_several_frames()
                return rgb
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"{name}: image is larger than the {Image.MAX_IMAGE_PIXELS:,}-pixel safety limit "
            "(set GSAM2_MAX_IMAGE_PIXELS, or PIL.Image.MAX_IMAGE_PIXELS, higher if you trust this file)"
        ) from None
    except PermissionError:
        raise InputError(f"{name}: cannot read it (permission denied)") from None
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image, or an image format that Pillow cannot read") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{name}: truncated or corrupt image ({error})") from None
