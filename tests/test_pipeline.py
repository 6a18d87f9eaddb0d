"""The ground + segment pipeline with tiny real models and a deterministic fake detector."""

from collections.abc import Sequence

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from gsam2.core import PromptError, ground_and_segment, load_image
from gsam2.core.detections import make_detections

from .conftest import shapes_image


class FixedBoxesDetector:
    """Speaks the Detector interface; returns the same pixel boxes for every image, counts its calls."""

    name = "fixed"
    requires_prompt = True
    produces_masks = False

    def __init__(self, boxes_per_image: list[list[list[float]]]):
        self.boxes_per_image = boxes_per_image
        self.batches: list[int] = []

    def validate_phrases(self, phrases: Sequence[str]) -> None:
        pass

    def detect(self, images, phrases, box_threshold, text_threshold) -> list[sv.Detections]:
        self.batches.append(len(images))
        start = sum(self.batches[:-1])
        results = []
        for boxes in self.boxes_per_image[start : start + len(images)]:
            boxes = np.array(boxes, np.float32).reshape(-1, 4)
            results.append(make_detections(boxes, np.full(len(boxes), 0.9), np.zeros(len(boxes), int), phrases))
        return results


def test_batch_of_different_sizes_with_tiny_models(detector, segmenter):
    images = [shapes_image(120, 160), shapes_image(75, 50, seed=1), shapes_image(200, 90, seed=2)]
    results = ground_and_segment(
        images,
        "car. person.",
        detector=detector,
        segmenter=segmenter,
        box_threshold=0.0,
        text_threshold=0.0,
        batch_size=2,
    )
    assert len(results) == 3
    for image, detections in zip(images, results):
        height, width = image.shape[:2]
        assert len(detections) > 0
        assert detections.mask.shape == (len(detections), height, width)
        assert detections.mask.dtype == bool
        assert detections.xyxy.dtype == np.float32
        assert ((detections.xyxy >= 0) & (detections.xyxy <= [width, height, width, height])).all()
        assert set(detections.data["class_name"]) <= {"car", "person"}
        assert detections.data["mask_score"].shape == (len(detections),)


def test_nothing_found_gives_empty_detections(detector, segmenter):
    results = ground_and_segment([shapes_image()], "car.", detector=detector, segmenter=segmenter, box_threshold=1.0)
    assert len(results) == 1 and len(results[0]) == 0
    assert results[0].mask.shape == (0, 120, 160)


def test_detector_sees_whole_batches(segmenter):
    fake = FixedBoxesDetector([[[10, 10, 40, 40]], [], [[0, 0, 20, 30], [5, 5, 15, 15]], [[1, 1, 9, 9]], []])
    images = [shapes_image(seed=i) for i in range(5)]
    results = ground_and_segment(images, ["dog"], detector=fake, segmenter=segmenter, batch_size=2)
    assert fake.batches == [2, 2, 1], "several images per detector call"
    assert [len(r) for r in results] == [1, 0, 2, 1, 0]
    assert results[2].data["class_name"].tolist() == ["dog", "dog"]
    np.testing.assert_allclose(results[2].xyxy, [[0, 0, 20, 30], [5, 5, 15, 15]])


def test_sam2_sees_every_box_of_an_image_in_one_call(segmenter, monkeypatch):
    calls = []
    original = segmenter._decode

    def spy(embedding, **prompts):
        calls.append(prompts["prompt_tensors"]["input_boxes"].shape[1])
        return original(embedding, **prompts)

    monkeypatch.setattr(segmenter, "_decode", spy)
    boxes = [[i, i, i + 20, i + 20] for i in range(7)]
    ground_and_segment([shapes_image()], "cat", detector=FixedBoxesDetector([boxes]), segmenter=segmenter)
    assert calls == [7]


def test_images_of_any_mode_are_accepted(segmenter):
    gray = Image.fromarray(shapes_image()[..., 0], "L")
    rgba = Image.fromarray(np.dstack([shapes_image(), np.full((120, 160), 255, np.uint8)]), "RGBA")
    fake = FixedBoxesDetector([[[10, 10, 50, 50]], [[10, 10, 50, 50]]])
    results = ground_and_segment([gray, rgba], "cat", detector=fake, segmenter=segmenter)
    assert [r.mask.shape for r in results] == [(1, 120, 160), (1, 120, 160)]


def test_exif_rotated_file_gets_masks_in_display_orientation(tmp_path, segmenter):
    displayed = shapes_image(40, 100)
    stored = Image.fromarray(displayed).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.jpg", exif=exif)
    image = load_image(tmp_path / "rotated.jpg")
    [detections] = ground_and_segment(
        [image], "cat", detector=FixedBoxesDetector([[[60, 5, 95, 35]]]), segmenter=segmenter
    )
    assert detections.mask.shape == (1, 40, 100)


def test_empty_prompt_fails_before_any_model_runs(segmenter):
    fake = FixedBoxesDetector([[[0, 0, 5, 5]]])
    with pytest.raises(PromptError):
        ground_and_segment([shapes_image()], " . ", detector=fake, segmenter=segmenter)
    assert fake.batches == []


def test_no_images_is_no_work(detector, segmenter):
    assert ground_and_segment([], "car", detector=detector, segmenter=segmenter) == []


def test_default_batch_size_follows_the_device(segmenter):
    import torch

    from gsam2.core.pipeline import default_batch_size

    assert default_batch_size(torch.device("cuda")) == 4
    assert default_batch_size(torch.device("cpu")) == 1
    fake = FixedBoxesDetector([[[1, 1, 9, 9]]] * 3)
    fake.device = torch.device("cpu")
    ground_and_segment([shapes_image(seed=i) for i in range(3)], "cat", detector=fake, segmenter=segmenter)
    assert fake.batches == [1, 1, 1]


def test_a_batch_prepared_ahead_gives_the_same_detections_and_masks(detector, segmenter):
    """The engine's prepare stage runs the processors early; the results must not change."""
    from gsam2.core.pipeline import PreparedBatch, preparation_steps

    images = [shapes_image(120, 160, seed=1), shapes_image(90, 70, seed=2), shapes_image(64, 64, seed=3)]
    phrases = ["car", "person"]
    plain = ground_and_segment(
        images, phrases, detector, segmenter, box_threshold=0.0, text_threshold=0.0, batch_size=len(images)
    )
    prepared = PreparedBatch(*(step(images) for step in preparation_steps(phrases, detector, segmenter)))
    ahead = ground_and_segment(
        images, phrases, detector, segmenter, box_threshold=0.0, text_threshold=0.0, prepared=prepared
    )
    assert sum(len(d) for d in plain) > 0
    for first, second in zip(plain, ahead):
        assert np.array_equal(first.xyxy, second.xyxy) and np.array_equal(first.class_id, second.class_id)
        assert np.array_equal(first.mask, second.mask), "pixel-identical masks"
