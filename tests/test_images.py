"""Every kind of image a user has: masks must line up with what a viewer shows."""

import numpy as np
import pytest
from PIL import Image

from gsam2.core import InputError, as_rgb_array, decode_image, load_image


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
