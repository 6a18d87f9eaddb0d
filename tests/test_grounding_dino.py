"""Grounding DINO post-processing against hand-computed numbers, and prompt tokens."""

import numpy as np
import pytest

from gsam2.core import PromptError
from gsam2.core.detectors.grounding_dino import center_to_corners, select_detections

PHRASES = ["car", "traffic light"]
# Tokens of "[CLS] car . traffic light . [SEP]": phrase index per token, -1 for separators.
TOKEN_PHRASE = np.array([-1, 0, -1, 1, 1, -1, -1])


def probs(*rows):
    return np.array(rows, dtype=np.float32)


def test_center_to_corners_by_hand():
    np.testing.assert_allclose(center_to_corners([[0.5, 0.5, 0.2, 0.4]]), [[0.4, 0.3, 0.6, 0.7]], atol=1e-6)


def test_normalised_boxes_become_pixel_xyxy_by_hand():
    # Image 200 high, 400 wide. Box centre (0.25, 0.5), size (0.1, 0.2)
    # -> x1 = (0.25 - 0.05) * 400 = 80, y1 = (0.5 - 0.1) * 200 = 80, x2 = 120, y2 = 120.
    detections = select_detections(
        token_probs=probs([0.0, 0.9, 0.0, 0.1, 0.1, 0.0, 0.0]),
        normalized_boxes=np.array([[0.25, 0.5, 0.1, 0.2]]),
        token_phrase=TOKEN_PHRASE,
        phrases=PHRASES,
        image_size=(200, 400),
        box_threshold=0.35,
        text_threshold=0.25,
    )
    np.testing.assert_allclose(detections.xyxy, [[80, 80, 120, 120]], atol=1e-4)
    np.testing.assert_allclose(detections.confidence, [0.9], atol=1e-6)
    assert detections.class_id.tolist() == [0]
    assert detections.data["class_name"].tolist() == ["car"]


def test_boxes_are_clipped_to_the_image():
    detections = select_detections(
        probs([0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0]),
        np.array([[0.95, 0.05, 0.2, 0.2]]),  # pokes out of the top-right corner
        TOKEN_PHRASE,
        PHRASES,
        image_size=(100, 100),
        box_threshold=0.35,
        text_threshold=0.25,
    )
    np.testing.assert_allclose(detections.xyxy, [[85, 0, 100, 15]], atol=1e-4)


def test_thresholds_and_multi_token_phrase_labels():
    token_probs = probs(
        [0.0, 0.1, 0.0, 0.2, 0.8, 0.0, 0.0],  # "light" token wins -> "traffic light", score 0.8
        [0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0],  # below the box threshold -> dropped
        [0.0, 0.0, 0.5, 0.2, 0.1, 0.0, 0.0],  # strongest on a period; best phrase 0.2 < text threshold -> dropped
        [0.0, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0],  # "car", 0.6
    )
    boxes = np.tile([[0.5, 0.5, 0.2, 0.2]], (4, 1))
    detections = select_detections(token_probs, boxes, TOKEN_PHRASE, PHRASES, (10, 10), 0.35, 0.25)
    # Sorted by score, highest first.
    assert detections.data["class_name"].tolist() == ["traffic light", "car"]
    np.testing.assert_allclose(detections.confidence, [0.8, 0.6], atol=1e-6)
    assert detections.class_id.tolist() == [1, 0]


def test_nothing_above_threshold_is_empty_not_an_error():
    detections = select_detections(
        probs([0.1] * 7), np.array([[0.5, 0.5, 0.1, 0.1]]), TOKEN_PHRASE, PHRASES, (10, 20), 0.35, 0.25
    )
    assert len(detections) == 0
    assert detections.xyxy.shape == (0, 4)


def test_token_phrase_map_follows_the_prompt(detector):
    mapping = detector.token_phrase_map(["car", "red square"])
    # [CLS] car . red square . [SEP]  (the tiny vocabulary has whole words for these)
    assert mapping.tolist() == [-1, 0, -1, 1, 1, -1, -1]


def test_prompt_longer_than_the_text_encoder_is_a_clear_error(detector):
    phrases = [f"thing{i}" for i in range(200)]
    with pytest.raises(PromptError, match=r"too long: \d+ tokens.*at most 256"):
        detector.validate_phrases(phrases)


def test_detect_batch_of_different_sizes(detector):
    images = [np.zeros((60, 80, 3), np.uint8), np.full((90, 50, 3), 200, np.uint8)]
    results = detector.detect(images, ["car", "person"], box_threshold=0.0, text_threshold=0.0)
    assert len(results) == 2
    for image, detections in zip(images, results):
        height, width = image.shape[:2]
        assert len(detections) > 0
        assert (detections.xyxy[:, [0, 2]] >= 0).all() and (detections.xyxy[:, [0, 2]] <= width).all()
        assert (detections.xyxy[:, [1, 3]] >= 0).all() and (detections.xyxy[:, [1, 3]] <= height).all()
        assert set(detections.data["class_name"]) <= {"car", "person"}
