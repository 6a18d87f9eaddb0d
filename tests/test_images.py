"""Every kind of image a user has: masks must line up with what a viewer shows."""

import os
import threading

import numpy as np
import pytest
from PIL import Image

from gsam2.core import InputError, as_rgb_array, decode_image, load_image
from gsam2.core.video_io import probe_video


def test_grayscale(tmp_path):
    Image.fromarray(np.full((10, 12), 77, np.uint8), "L").save(tmp_path / "g.png")
    image = load_image(tmp_path / "g.png")
    assert image.shape == (10, 12, 3) and image.dtype == np.uint8 and (image == 77).all()


def test_rgba_drops_alpha(tmp_path):
    rgba = np.zeros((8, 9, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 100
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.shape == (8, 9, 3) and (image[..., 0] == 200).all() and (image[..., 1:] == 0).all()


def test_palette_with_transparency(tmp_path):
    Image.new("P", (5, 4), 0).save(tmp_path / "p.gif", transparency=0)
    assert load_image(tmp_path / "p.gif").shape == (4, 5, 3)


def test_sixteen_bit_png_uses_its_full_range(tmp_path):
    values = np.array([[0, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    image = load_image(tmp_path / "deep.png")
    assert image.shape == (1, 3, 3)
    assert image[0, :, 0].tolist() == [0, 128, 255]


def test_twelve_bit_data_in_a_sixteen_bit_png_is_not_dark(tmp_path):
    """12-bit sensor data (0-4095) stored in a 16-bit PNG: 4095 is white, not 15."""
    values = np.array([[0, 2048, 4095]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "twelve.png")
    assert load_image(tmp_path / "twelve.png")[0, :, 0].tolist() == [0, 128, 255]


def test_float_tiff_in_zero_to_one_is_not_black(tmp_path):
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    assert load_image(tmp_path / "float.tif")[0, :, 0].tolist() == [0, 128, 255]


def test_float_arrays_and_sixteen_bit_arrays_scale_by_their_range():
    from gsam2.core.images import as_rgb_array

    assert as_rgb_array(np.array([[0.0, 1.0]], np.float32))[0, :, 0].tolist() == [0, 255]
    assert as_rgb_array(np.array([[0, 1023]], np.uint16))[0, :, 0].tolist() == [0, 255]  # 10-bit
    assert as_rgb_array(np.array([[0, 65535]], np.uint16))[0, :, 0].tolist() == [0, 255]
    assert as_rgb_array(np.array([[float("nan"), -3.0]], np.float32))[0, :, 0].tolist() == [0, 0]


def test_pixel_limit_is_250_megapixels_and_settable(tmp_path):
    import subprocess
    import sys

    assert Image.MAX_IMAGE_PIXELS >= 200_000_000, "108 and 200 MP phone photos are read"
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    code = "from gsam2.core import load_image; load_image(%r)" % str(tmp_path / "big.png")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "GSAM2_MAX_IMAGE_PIXELS": "5000"})
    assert result.returncode != 0 and "larger than the 5,000-pixel safety limit" in result.stderr


def test_unreadable_file_says_permission_denied(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(path)

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", refuse)  # root reads any file: stand in for a chmod 000 file
    with pytest.raises(InputError, match=r"locked\.png: cannot read it \(permission denied\)"):
        load_image(path)


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (10, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red in CMYK
    image = load_image(tmp_path / "cmyk.jpg")
    assert image.shape == (6, 10, 3)
    red, green, blue = image[3, 5].astype(int)
    assert red > 200 and green < 60 and blue < 60


def test_exif_rotation_is_applied(tmp_path):
    # Displayed image: 40 wide, 20 high, white block in its top-left corner.
    displayed = np.zeros((20, 40, 3), np.uint8)
    displayed[:5, :8] = 255
    # Orientation 6 means "rotate 90° clockwise to display": store the pixels rotated back.
    stored = Image.fromarray(displayed).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    image = load_image(tmp_path / "rotated.jpg")
    assert image.shape == (20, 40, 3)
    assert image[:5, :8].mean() > 200 and image[10:, 20:].mean() < 30


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"nope\.jpg: no such file"):
        load_image(tmp_path / "nope.jpg")


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        load_image(tmp_path)


@pytest.mark.parametrize("read", [load_image, probe_video], ids=["load_image", "probe_video"])
def test_a_fifo_is_refused_without_being_opened(tmp_path, read):
    """Opening a FIFO nobody writes to blocks forever, in every entry point (a FiftyOne sample's filepath too)."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    errors: list[Exception] = []

    def attempt():
        try:
            read(fifo)
        except Exception as error:  # noqa: BLE001 - checked below
            errors.append(error)

    reader = threading.Thread(target=attempt, daemon=True)
    reader.start()
    reader.join(timeout=30)
    if reader.is_alive():  # blocked in open(): a writer lets it go, then the test fails
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=30)
        pytest.fail(f"{read.__name__} blocked opening a FIFO")
    [error] = errors
    assert isinstance(error, InputError) and "pipe.png: is a FIFO (named pipe), not a" in str(error)


def test_several_frames_give_the_first_and_say_so(tmp_path):
    """An animated GIF and a multi-page TIFF, made by PIL: the first frame is read, and the caller is told."""
    red, blue = Image.new("RGB", (6, 4), (255, 0, 0)), Image.new("RGB", (6, 4), (0, 0, 255))
    red.save(tmp_path / "a.gif", save_all=True, append_images=[blue], duration=100, loop=0)
    red.save(tmp_path / "b.tif", save_all=True, append_images=[blue])
    red.save(tmp_path / "c.gif")
    for name, several in (("a.gif", True), ("b.tif", True), ("c.gif", False)):
        told = []
        image = load_image(tmp_path / name, on_several_frames=lambda: told.append(name))
        assert tuple(image[0, 0]) == (255, 0, 0), name
        assert told == ([name] if several else []), name


def test_not_an_image(tmp_path):
    (tmp_path / "notes.jpg").write_text("these are not pixels")
    with pytest.raises(InputError, match=r"notes\.jpg: not an image"):
        load_image(tmp_path / "notes.jpg")


def test_truncated_image(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.png: truncated or corrupt"):
        load_image(tmp_path / "cut.png")


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels is "huge" now
    with pytest.raises(InputError, match=r"big\.png: image is larger than the 1,000-pixel safety limit"):
        load_image(tmp_path / "big.png")
    # Between 1x and 2x the limit PIL only warns; that is refused too.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    with pytest.raises(InputError, match="safety limit"):
        load_image(tmp_path / "big.png")


def test_decode_bytes_names_the_input():
    with pytest.raises(InputError, match="request image: not an image"):
        decode_image(b"\x00\x01garbage", name="request image")


@pytest.mark.parametrize(
    ("array", "shape"),
    [
        (np.zeros((4, 5), np.uint8), (4, 5, 3)),
        (np.zeros((4, 5, 4), np.uint8), (4, 5, 3)),
        (np.full((4, 5, 3), 65535, np.uint16), (4, 5, 3)),
        (np.ones((4, 5, 3), np.float32), (4, 5, 3)),
    ],
)
def test_arrays_become_rgb_uint8(array, shape):
    image = as_rgb_array(array)
    assert image.shape == shape and image.dtype == np.uint8


def test_bad_arrays_are_refused():
    with pytest.raises(InputError, match="shape"):
        as_rgb_array(np.zeros((4, 5, 2), np.uint8))
    with pytest.raises(InputError, match="no pixels"):
        as_rgb_array(np.zeros((0, 5, 3), np.uint8))
