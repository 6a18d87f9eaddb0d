"""Sliced (SAHI) detection: small objects in a large image are found only when tiled."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gsam2.core import InputError, ground_and_segment, load_detector
from gsam2.core.detections import empty_detections, make_detections
from gsam2.core.detectors.sliced import SlicedDetector

RED = (255, 0, 0)


class DownscalingDetector:
    """Finds red squares the way a real detector sees them: after shrinking the input.

    Like Grounding DINO resizing to ~800 px, it scales the image so its long side
    is at most ``input_size``; a square smaller than ``min_pixels`` after that is
    invisible to it.
    """

    name = "downscaling-fake"
    requires_prompt = True
    produces_masks = False

    def __init__(self, input_size: int = 512, min_pixels: int = 8):
        self.input_size, self.min_pixels = input_size, min_pixels
        self.calls = 0

    def validate_phrases(self, phrases):
        pass

    def detect(self, images, phrases, box_threshold, text_threshold):
        results = []
        for image in images:
            self.calls += 1
            height, width = image.shape[:2]
            scale = min(1.0, self.input_size / max(height, width))
            red = np.all(image == RED, axis=-1).astype(np.uint8)
            count, _, stats, _ = cv2.connectedComponentsWithStats(red, connectivity=4)
            boxes = [
                (x, y, x + w, y + h)
                for x, y, w, h, _ in stats[1:count]
                if min(w, h) * scale >= self.min_pixels
            ]
            if not boxes:
                results.append(empty_detections(height, width, with_masks=False))
                continue
            results.append(
                make_detections(np.array(boxes, float), np.full(len(boxes), 0.9), np.zeros(len(boxes), int), phrases)
            )
        return results


def aerial_image() -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A 2048x1536 image with 12 squares of 20 px (some across tile borders) and one of 500 px."""
    image = np.full((1536, 2048, 3), 90, dtype=np.uint8)
    squares = [(x, y, 20) for x, y in [(100, 100), (250, 240), (500, 900), (1000, 130), (1500, 1400), (1900, 50),
                                       (700, 1300), (1250, 700), (1800, 1000), (60, 1450), (185, 185), (960, 960)]]
    squares.append((1300, 200, 500))
    boxes = []
    for x, y, size in squares:
        image[y : y + size, x : x + size] = RED
        boxes.append((x, y, x + size, y + size))
    return image, boxes


def test_small_objects_are_found_only_when_sliced():
    image, truth = aerial_image()
    inner = DownscalingDetector()

    [whole] = inner.detect([image], ["red square"], 0.3, 0.25)
    assert len(whole) == 1, "only the big square is visible to the downscaling detector"

    sliced = SlicedDetector(inner, slice_wh=(256, 256), overlap_wh=(64, 64))
    [found] = sliced.detect([image], ["red square"], 0.3, 0.25)
    assert len(found) == len(truth)
    found_boxes = sorted(tuple(int(round(v)) for v in box) for box in found.xyxy)
    assert found_boxes == sorted(truth)
    assert set(found.data["class_name"]) == {"red square"}
    assert (found.class_id == 0).all()
    assert np.all(np.diff(found.confidence) <= 0), "sorted by score"


def test_squares_cut_by_tile_borders_merge_into_one_box():
    # (250, 240) lies across the border of the first 256 px tile: both tiles see a part of it.
    image, _ = aerial_image()
    sliced = SlicedDetector(DownscalingDetector(min_pixels=4), slice_wh=(256, 256), overlap_wh=(64, 64))
    [found] = sliced.detect([image], ["red square"], 0.3, 0.25)
    near = [box for box in found.xyxy if abs(box[0] - 250) < 30 and abs(box[1] - 240) < 30]
    assert len(near) == 1
    np.testing.assert_allclose(near[0], [250, 240, 270, 260], atol=0.5)


def test_image_smaller_than_a_tile_is_one_pass_without_a_duplicate_whole_image_pass():
    image = np.full((200, 300, 3), 90, dtype=np.uint8)
    image[50:70, 50:70] = RED
    inner = DownscalingDetector()
    [found] = SlicedDetector(inner, slice_wh=(640, 640), overlap_wh=(128, 128)).detect([image], ["sq"], 0.3, 0.2)
    assert len(found) == 1
    assert inner.calls == 1


def test_nothing_found_gives_typed_empty_detections():
    image = np.full((600, 900, 3), 90, dtype=np.uint8)
    [found] = SlicedDetector(DownscalingDetector(), slice_wh=(256, 256), overlap_wh=(32, 32)).detect(
        [image], ["sq"], 0.3, 0.2
    )
    assert len(found) == 0 and found.xyxy.shape == (0, 4)


BLUE = (0, 0, 255)


class ColourNamingDetector(DownscalingDetector):
    """Prompt-free: names squares by colour, numbering the names it saw from 0 on every call."""

    requires_prompt = False

    def detect(self, images, phrases, box_threshold, text_threshold):
        results = []
        for image in images:
            parts = []
            for name, colour in (("blue", BLUE), ("red", RED)):
                only = np.where(np.all(image == colour, axis=-1, keepdims=True), np.uint8(RED), np.uint8(0))
                [found] = super().detect([only], [name], box_threshold, text_threshold)
                parts.append(found)
            boxes = np.concatenate([part.xyxy for part in parts])
            names = [str(n) for part in parts for n in part.data["class_name"]]
            order = list(dict.fromkeys(names))  # this call's own numbering
            results.append(
                make_detections(boxes, np.full(len(boxes), 0.9), [order.index(n) for n in names], order)
                if names
                else empty_detections(*image.shape[:2], with_masks=False)
            )
        return results


def test_prompt_free_detectors_keep_one_class_id_per_name_across_tiles():
    image, truth = aerial_image()
    image[200:700, 1300:1800] = BLUE  # the big square
    sliced = SlicedDetector(ColourNamingDetector(), slice_wh=(256, 256), overlap_wh=(64, 64))
    [found] = sliced.detect([image], [], 0.3, 0.2)
    assert len(found) == len(truth)
    ids_by_name = {}
    for name, class_id in zip(found.data["class_name"], found.class_id):
        ids_by_name.setdefault(str(name), set()).add(int(class_id))
    assert ids_by_name.keys() == {"blue", "red"}
    assert all(len(ids) == 1 for ids in ids_by_name.values())
    assert ids_by_name["blue"] != ids_by_name["red"]


def test_sliced_detections_are_segmented_by_sam2(segmenter):
    image, truth = aerial_image()
    image = image[:768, :1024].copy()  # keep the SAM 2 step quick
    sliced = SlicedDetector(DownscalingDetector(input_size=256), slice_wh=(256, 256), overlap_wh=(64, 64))
    [result] = ground_and_segment([image], "red square", detector=sliced, segmenter=segmenter)
    assert len(result) > 1
    assert result.mask.shape == (len(result), 768, 1024)


def test_load_detector_slices_any_backend(tiny_models):
    detector = load_detector(str(tiny_models["grounding-dino"]), device="cpu", slice_size=96, slice_overlap=16)
    assert isinstance(detector, SlicedDetector)
    assert detector.slice_wh == (96, 96) and detector.overlap_wh == (16, 16)
    image = np.random.default_rng(0).integers(0, 255, (200, 260, 3), dtype=np.uint8)
    [found] = detector.detect([image], ["car", "dog"], 0.0, 0.0)
    assert len(found) > 0
    assert found.xyxy[:, [0, 2]].max() <= 260 and found.xyxy[:, [1, 3]].max() <= 200
    assert set(found.data["class_name"]) <= {"car", "dog"}


@pytest.mark.parametrize("slice_wh, overlap_wh", [((256, 256), (256, 0)), ((0, 256), (0, 0)), ((256, 256), (-1, 0))])
def test_bad_slice_settings_are_refused(slice_wh, overlap_wh):
    with pytest.raises(InputError, match="overlap"):
        SlicedDetector(DownscalingDetector(), slice_wh=slice_wh, overlap_wh=overlap_wh)


def test_a_strip_too_thin_for_the_detector_whole_is_detected_in_tiles(detector):
    """20000x100 is refused whole by Grounding DINO (a line at its input size) but its 512 px tiles are normal."""
    strip = np.random.default_rng(1).integers(0, 255, (100, 20000, 3), dtype=np.uint8)
    with pytest.raises(InputError, match=r"too elongated for Grounding DINO.*detect over tiles") as refused:
        detector.detect([strip], ["car"], 0.3, 0.25)
    assert "--" not in str(refused.value), "the core names no CLI option"
    [found] = SlicedDetector(detector, slice_wh=(512, 512), overlap_wh=(128, 128)).detect([strip], ["car"], 0.3, 0.25)
    assert len(found) == 0 or (found.xyxy[:, [0, 2]].max() <= 20000 and found.xyxy[:, [1, 3]].max() <= 100)


def test_tiles_that_are_themselves_too_thin_are_refused_by_name(detector):
    strip = np.zeros((2, 20000, 3), dtype=np.uint8)
    sliced = SlicedDetector(detector, slice_wh=(512, 512), overlap_wh=(128, 128))
    with pytest.raises(InputError, match=r"image 1 \(20000x2\) is too elongated for grounding-dino even in 512x2 tile"):
        sliced.detect([strip], ["car"], 0.3, 0.25)
