import json

import numpy as np
import supervision as sv
from pycocotools import mask as mask_utils

from gsam2.core import detections_to_record, draw_detections, empty_detections, mask_to_rle, rle_to_mask


def random_masks(count=5, height=37, width=53, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((count, height, width)) > 0.6


def test_rle_round_trip_is_exact():
    for mask in list(random_masks()) + [np.zeros((4, 6), bool), np.ones((4, 6), bool)]:
        rle = mask_to_rle(mask)
        assert isinstance(rle["counts"], str)
        assert rle["size"] == list(mask.shape)
        np.testing.assert_array_equal(rle_to_mask(rle), mask)
        json.dumps(rle)  # must be JSON-serialisable as is


def test_rle_area_and_bbox_agree_with_the_mask():
    mask = np.zeros((30, 40), bool)
    mask[5:15, 10:30] = True  # 10 rows x 20 columns
    rle = mask_to_rle(mask)
    encoded = {"size": rle["size"], "counts": rle["counts"].encode()}
    assert mask_utils.area(encoded) == mask.sum() == 200
    np.testing.assert_allclose(mask_utils.toBbox(encoded), [10, 5, 20, 10])  # COCO x, y, w, h


def make_detections():
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 2:8, 3:9] = True
    masks[1, 10:18, 12:28] = True
    return sv.Detections(
        xyxy=np.array([[3, 2, 9, 8], [12, 10, 28, 18]], np.float32),
        mask=masks,
        confidence=np.array([0.9, 0.5], np.float32),
        class_id=np.array([0, 1]),
        data={"class_name": np.array(["car", "dog"]), "mask_score": np.array([0.8, 0.7], np.float32)},
    )


def test_record_is_the_reference_format():
    record = detections_to_record(make_detections(), "a/b.jpg", (20, 30))
    assert set(record) == {"image_path", "annotations", "box_format", "img_width", "img_height"}
    assert record["box_format"] == "xyxy" and record["img_width"] == 30 and record["img_height"] == 20
    first = record["annotations"][0]
    assert first["class_name"] == "car" and first["bbox"] == [3.0, 2.0, 9.0, 8.0]
    assert first["score"] == 0.9 and first["mask_score"] == 0.8
    np.testing.assert_array_equal(rle_to_mask(first["segmentation"]), make_detections().mask[0])
    json.loads(json.dumps(record))


def test_record_of_empty_detections():
    record = detections_to_record(empty_detections(20, 30), "x.png", (20, 30))
    assert record["annotations"] == []


def test_draw_marks_the_objects_and_keeps_the_input():
    image = np.full((20, 30, 3), 128, np.uint8)
    drawn = draw_detections(image, make_detections())
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (image == 128).all(), "drawing must not modify its input"
    assert (drawn[5, 5] != 128).any(), "the first object's mask is painted"
    np.testing.assert_array_equal(draw_detections(image, empty_detections(20, 30)), image)
