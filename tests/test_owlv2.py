"""OWLv2 backend: the tiny model through the real loader, and box geometry with fixed model outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gsam2.core import PromptError, ground_and_segment, load_detector
from gsam2.core.detectors.owlv2 import Owlv2Detector, owl_detections


@pytest.fixture(scope="module")
def owl(tiny_models):
    return load_detector(f"owlv2:{tiny_models['owlv2']}", device="cpu")


def random_image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_loads_by_backend_name_and_detects_a_batch_of_mixed_sizes(owl):
    assert isinstance(owl, Owlv2Detector)
    images = [random_image(120, 200), random_image(90, 60, seed=1)]
    results = owl.detect(images, ["car", "red square"], 0.0, 0.0)
    assert len(results) == 2
    for image, found in zip(images, results):
        height, width = image.shape[:2]
        assert len(found) > 0 and found.mask is None
        assert found.xyxy.dtype == np.float32
        assert (found.xyxy >= 0).all()
        assert (found.xyxy[:, [0, 2]] <= width).all() and (found.xyxy[:, [1, 3]] <= height).all()
        assert set(found.data["class_name"]) <= {"car", "red square"}
        assert [["car", "red square"][i] for i in found.class_id] == list(found.data["class_name"])
        assert np.all(np.diff(found.confidence) <= 0)


def test_box_threshold_filters(owl):
    image = random_image(100, 100)
    everything = owl.detect([image], ["car"], 0.0, 0.0)[0]
    nothing = owl.detect([image], ["car"], 1.0, 0.0)[0]
    assert len(everything) > 0 and len(nothing) == 0
    assert nothing.xyxy.shape == (0, 4)


def test_phrase_longer_than_the_text_encoder_is_refused(owl):
    with pytest.raises(PromptError, match="too long"):
        owl.validate_phrases(["a b c d e f g h i j k l m n o p q r"])


def test_boxes_on_a_non_square_image_map_back_to_its_pixels(owl, monkeypatch):
    """OWLv2 pads images to a square; a box predicted on the padded square must land on the image's pixels."""
    image = random_image(100, 200)  # padded to 200 x 200

    class Outputs:
        # Query 0: centre (0.5, 0.25) of the padded square, 0.1 wide: pixels (90, 40)-(110, 60).
        # Query 1: half outside the image (the padding below it): clipped at y = 100.
        logits = torch.tensor([[[5.0, -5.0], [-5.0, 4.0], [-9.0, -9.0]]])
        pred_boxes = torch.tensor([[[0.5, 0.25, 0.1, 0.1], [0.25, 0.5, 0.1, 0.2], [0.1, 0.1, 0.1, 0.1]]])

    monkeypatch.setattr(owl, "model", lambda **inputs: Outputs())
    [found] = owl.detect([image], ["car", "dog"], 0.5, 0.0)
    assert list(found.data["class_name"]) == ["car", "dog"]
    np.testing.assert_allclose(found.xyxy[0], [90, 40, 110, 60], atol=1e-3)
    np.testing.assert_allclose(found.xyxy[1], [40, 80, 60, 100], atol=1e-3)


def test_owl_detections_sorts_and_clips():
    found = owl_detections(
        np.array([[-5, 10, 50, 60], [10, 10, 300, 250]], float),
        np.array([0.2, 0.7]),
        np.array([1, 0]),
        ["car", "dog"],
        (200, 250),
    )
    assert list(found.data["class_name"]) == ["car", "dog"]
    np.testing.assert_allclose(found.xyxy, [[10, 10, 250, 200], [0, 10, 50, 60]])
    assert owl_detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), ["car"], (10, 10)).xyxy.shape == (0, 4)


def test_owlv2_then_sam2(owl, segmenter):
    [result] = ground_and_segment([random_image(96, 128)], "car. dog.", detector=owl, segmenter=segmenter,
                                  box_threshold=0.0)
    assert len(result) > 0 and result.mask.shape[1:] == (96, 128)


def test_large_images_are_shrunk_before_the_processor_pads_them(owl, monkeypatch):
    """A 4000x3000 photo once became a 4000x4000 float array (157 s, 3.7 GB): now at most the model's input side."""
    image = random_image(3000, 4000)
    seen = []
    real = owl.processor

    def spy(*args, images=None, **kwargs):
        seen.extend(picture.size for picture in images)
        return real(*args, images=images, **kwargs)

    class Outputs:
        # Query 0: centre (0.5, 0.25) of the padded square, 0.1 wide: the same place at any scale.
        logits = torch.tensor([[[5.0, -5.0]]])
        pred_boxes = torch.tensor([[[0.5, 0.25, 0.1, 0.1]]])

    monkeypatch.setattr(owl, "processor", spy)
    spy.image_processor, spy.tokenizer = real.image_processor, real.tokenizer
    monkeypatch.setattr(owl, "model", lambda **inputs: Outputs())
    [found] = owl.detect([image], ["car", "dog"], 0.5, 0.0)
    assert max(seen[0]) == owl.input_side and seen[0][0] / seen[0][1] == pytest.approx(4000 / 3000, rel=0.01)
    np.testing.assert_allclose(found.xyxy[0], [1800, 800, 2200, 1200], atol=1e-2)


def test_an_extreme_strip_is_refused_with_one_line(owl):
    from gsam2.core import InputError

    with pytest.raises(InputError, match=r"image 2 \(20000x10\) is too elongated for OWL"):
        owl.detect([random_image(64, 64), random_image(10, 20000)], ["car"], 0.1, 0.0)
