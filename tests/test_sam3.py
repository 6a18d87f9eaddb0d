"""SAM 3 backend: the tiny model through the real loader, and its post-processing with fixed outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gsam2.core import PromptError, ground_and_segment, load_detector
from gsam2.core.detectors import Detector
from gsam2.core.detectors.sam3 import Sam3Detector, pair_instances, sam3_detections
from PIL import Image

from .tiny_sam3 import build_sam3

PHRASES = ["car", "red dog", "person"]


@pytest.fixture(scope="module")
def sam3_folder(tmp_path_factory):
    model, processor = build_sam3()
    folder = tmp_path_factory.mktemp("tiny-sam3")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sam3(sam3_folder):
    return Sam3Detector.from_pretrained(str(sam3_folder), torch.device("cpu"))


@pytest.fixture(scope="module")
def queries(sam3):
    return sam3.model.config.detr_decoder_config.num_queries


def random_image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_is_a_mask_producing_prompted_detector(sam3):
    assert isinstance(sam3, Detector)
    assert (sam3.name, sam3.requires_prompt, sam3.produces_masks) == ("sam3", True, True)
    assert sam3.max_text_len == 32


def test_loads_by_backend_name(sam3_folder):
    detector = load_detector(f"sam3:{sam3_folder}", device="cpu")
    assert isinstance(detector, Sam3Detector)
    found = detector.detect([random_image(40, 50)], ["car"], 0.0, 0.0)[0]
    assert found.mask.shape[1:] == (40, 50)


def test_batch_of_non_square_images_of_different_sizes(sam3, queries):
    images = [random_image(60, 90), random_image(130, 70, seed=1), random_image(33, 33, seed=2)]
    results = sam3.detect(images, PHRASES, 0.0, 0.0)
    assert len(results) == len(images)
    for image, found in zip(images, results):
        height, width = image.shape[:2]
        # Threshold 0 keeps every query of every phrase.
        assert len(found) == queries * len(PHRASES)
        assert found.xyxy.dtype == np.float32 and found.xyxy.shape == (len(found), 4)
        assert found.confidence.dtype == np.float32
        assert found.mask.dtype == bool and found.mask.shape == (len(found), height, width)
        assert np.all(found.xyxy[:, [0, 2]] >= 0) and np.all(found.xyxy[:, [0, 2]] <= width)
        assert np.all(found.xyxy[:, [1, 3]] >= 0) and np.all(found.xyxy[:, [1, 3]] <= height)
        assert np.all((found.confidence > 0) & (found.confidence <= 1))
        assert np.all(np.diff(found.confidence) <= 0), "sorted by score, best first"
        # Every phrase is its own prompt: each labels exactly its queries, by index.
        assert np.bincount(found.class_id, minlength=len(PHRASES)).tolist() == [queries] * len(PHRASES)
        assert [str(name) for name in found.data["class_name"]] == [PHRASES[i] for i in found.class_id]


def test_threshold_keeps_everything_or_nothing(sam3, queries):
    image = random_image(48, 80)
    assert len(sam3.detect([image], ["car", "cup"], 0.0, 0.0)[0]) == 2 * queries
    [none] = sam3.detect([image], ["car", "cup"], 1.01, 0.0)
    assert len(none) == 0
    assert none.xyxy.shape == (0, 4) and none.xyxy.dtype == np.float32
    assert none.mask.shape == (0, 48, 80) and none.mask.dtype == bool
    assert none.confidence.dtype == np.float32 and none.class_id.shape == (0,)
    # A threshold in the middle keeps exactly the scores above it.
    everything = sam3.detect([image], ["car", "cup"], 0.0, 0.0)[0]
    middle = float(np.median(everything.confidence))
    some = sam3.detect([image], ["car", "cup"], middle, 0.0)[0]
    assert len(some) == int((everything.confidence > middle).sum())
    np.testing.assert_allclose(some.confidence, everything.confidence[everything.confidence > middle], rtol=1e-6)


@pytest.mark.parametrize("pairs_per_forward", [1, 4, 64])
def test_batched_pairs_match_one_prompt_at_a_time_through_the_processor(sam3, pairs_per_forward):
    """Shared vision/text features and (image, phrase) batching change nothing:
    every pair gives what the documented one-image, one-prompt call gives."""
    images = [random_image(60, 90), random_image(130, 70, seed=1)]
    detector = Sam3Detector(sam3.model, sam3.processor, sam3.device, pairs_per_forward=pairs_per_forward)
    threshold = 0.25  # the tiny model's scores straddle it
    results = detector.detect(images, PHRASES, threshold, 0.0)
    processor = sam3.processor
    for image, found in zip(images, results):
        assert 0 < len(found) < len(PHRASES) * sam3.model.config.detr_decoder_config.num_queries
        for index, phrase in enumerate(PHRASES):
            inputs = processor(images=Image.fromarray(image), text=phrase, return_tensors="pt")
            with torch.inference_mode():
                outputs = sam3.model(
                    pixel_values=inputs["pixel_values"],
                    input_ids=inputs["input_ids"],
                    attention_mask=inputs["attention_mask"],
                )
            [expected] = processor.post_process_instance_segmentation(
                outputs, threshold=threshold, mask_threshold=0.5, target_sizes=[image.shape[:2]]
            )
            order = np.argsort(-expected["scores"].numpy(), kind="stable")
            mine = found[found.class_id == index]
            np.testing.assert_allclose(mine.confidence, expected["scores"].numpy()[order], rtol=1e-5, atol=1e-6)
            boxes = expected["boxes"].numpy()[order]
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, image.shape[1])
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, image.shape[0])
            np.testing.assert_allclose(mine.xyxy, boxes, rtol=1e-4, atol=1e-3)
            assert np.array_equal(mine.mask, expected["masks"].numpy()[order].astype(bool))


def test_long_phrase_is_a_prompt_error(sam3):
    # The tiny tokenizer makes each single-letter word one token; start and end tokens make 2 more.
    fits = " ".join("abcdefghijklmnopqrstuvwxyz0123"[:30])
    sam3.validate_phrases([fits])  # 32 tokens: the most the processor takes
    too_long = fits + " 4"
    with pytest.raises(PromptError, match="too long: 33 tokens.*at most 32"):
        sam3.validate_phrases(["car", too_long])
    with pytest.raises(PromptError):
        sam3.detect([random_image(20, 20)], [too_long], 0.5, 0.0)


def test_no_images_and_no_phrases(sam3):
    assert sam3.detect([], PHRASES, 0.0, 0.0) == []
    [empty] = sam3.detect([random_image(21, 34)], [], 0.0, 0.0)
    assert len(empty) == 0 and empty.mask.shape == (0, 21, 34)


def test_pipeline_uses_sam3_masks_without_loading_sam2(sam3):
    images = [random_image(50, 70), random_image(64, 40, seed=3)]
    # The default segmenter is a hub id that cannot load offline: it must not be touched.
    results = ground_and_segment(images, "car. person", detector=sam3, box_threshold=0.0)
    for image, found in zip(images, results):
        assert len(found) > 0 and found.mask.shape[1:] == image.shape[:2]
        np.testing.assert_array_equal(found.data["mask_score"], found.confidence)
        assert set(found.data["class_name"]) == {"car", "person"}


# --- post-processing with fixed outputs ---------------------------------------------------------


def test_pair_instances_scores_boxes_and_upsampled_masks():
    logits = torch.tensor([2.0, -3.0, 0.5])
    presence = torch.tensor([1.0])
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 1.2, 1.1]])
    masks = torch.full((3, 2, 2), -10.0)
    masks[0, :, 0] = 10.0  # left half
    masks[2, 1, :] = 10.0  # bottom half
    expected_scores = torch.sigmoid(logits) * torch.sigmoid(presence)
    threshold = float(expected_scores[2]) - 1e-4  # keeps queries 0 and 2, drops 1

    scores, xyxy, full = pair_instances(logits, boxes, masks, presence, (40, 60), threshold)

    np.testing.assert_allclose(scores, expected_scores[[0, 2]].numpy(), rtol=1e-6)
    assert scores.dtype == np.float32 and xyxy.dtype == np.float32
    np.testing.assert_allclose(xyxy, [[6, 8, 30, 24], [30, 20, 72, 44]], rtol=1e-5)  # scaled, not clipped
    assert full.shape == (2, 40, 60) and full.dtype == bool
    assert full[0, :, :30].all() and not full[0, :, 30:].any()
    assert full[1, 20:, :].all() and not full[1, :20, :].any()
    # Without a presence logit the score is the query's own probability; strictly above the threshold.
    scores, _, _ = pair_instances(logits, boxes, masks, None, (40, 60), float(torch.sigmoid(logits[2])))
    np.testing.assert_allclose(scores, torch.sigmoid(logits[:1]).numpy(), rtol=1e-6)


def test_pair_instances_matches_the_processor_post_processing(sam3):
    generator = torch.Generator().manual_seed(1)
    queries, size = 40, (37, 53)
    outputs = type("Outputs", (), {})()
    outputs.pred_logits = torch.randn(1, queries, generator=generator) * 3
    outputs.presence_logits = torch.randn(1, 1, generator=generator)
    outputs.pred_boxes = torch.rand(1, queries, 4, generator=generator)
    outputs.pred_masks = torch.randn(1, queries, 8, 8, generator=generator) * 4
    [expected] = sam3.processor.post_process_instance_segmentation(
        outputs, threshold=0.3, mask_threshold=0.5, target_sizes=[size]
    )
    scores, xyxy, masks = pair_instances(
        outputs.pred_logits[0], outputs.pred_boxes[0], outputs.pred_masks[0], outputs.presence_logits[0], size, 0.3
    )
    assert 0 < len(scores) < queries  # the draw keeps some and drops some
    np.testing.assert_allclose(scores, expected["scores"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(xyxy, expected["boxes"].numpy(), rtol=1e-5)
    assert np.array_equal(masks, expected["masks"].numpy().astype(bool))


def test_sam3_detections_merges_phrases_sorted_clipped_and_labelled():
    height, width = 10, 20
    mask = np.zeros((height, width), dtype=bool)
    car_masks = np.stack([mask.copy(), mask.copy()])
    car_masks[0, 0, 0] = True
    car_masks[1, 1, 1] = True
    dog_masks = mask.copy()[None]
    dog_masks[0, 2, 2] = True
    instances = [
        (np.array([0.4, 0.9]), np.array([[-5, 2, 8, 30], [1, 1, 4, 4]]), car_masks),
        (np.zeros(0), np.zeros((0, 4)), np.zeros((0, height, width), bool)),
        (np.array([0.6]), np.array([[10, 5, 25, 9]]), dog_masks),
    ]
    found = sam3_detections(instances, ["car", "cup", "dog"], (height, width))

    np.testing.assert_allclose(found.confidence, [0.9, 0.6, 0.4])
    assert found.class_id.tolist() == [0, 2, 0]
    assert [str(name) for name in found.data["class_name"]] == ["car", "dog", "car"]
    np.testing.assert_array_equal(found.xyxy, [[1, 1, 4, 4], [10, 5, 20, 9], [0, 2, 8, 10]])
    assert found.xyxy.dtype == np.float32 and found.confidence.dtype == np.float32
    # Masks follow their boxes through the sort.
    assert found.mask.dtype == bool and found.mask.shape == (3, height, width)
    assert found.mask[0, 1, 1] and found.mask[1, 2, 2] and found.mask[2, 0, 0]
    assert found.mask.sum() == 3


def test_sam3_detections_with_nothing_found_is_typed_empty():
    empty = sam3_detections([(np.zeros(0), np.zeros((0, 4)), np.zeros((0, 7, 9), bool))] * 2, ["a", "b"], (7, 9))
    assert len(empty) == 0
    assert empty.xyxy.shape == (0, 4) and empty.xyxy.dtype == np.float32
    assert empty.mask.shape == (0, 7, 9) and empty.mask.dtype == bool
    assert empty.data["class_name"].shape == (0,)


def test_grounded_tracking_takes_sam3_masks_without_a_sam2_segmenter(sam3):
    from gsam2.core.tracker import Sam2VideoTracker
    from gsam2.core.video_pipeline import ground_and_track

    from .conftest import make_tiny_models

    model, processor = make_tiny_models.build_sam2_video()
    tracker = Sam2VideoTracker(model, processor, torch.device("cpu"))
    frames = [(index, random_image(48, 64, seed=index)) for index in range(4)]
    # segmenter=None: SAM 3's own masks prompt the SAM 2 tracker on keyframes.
    results = list(ground_and_track(frames, "car. cup", sam3, None, tracker, step=2, box_threshold=0.2515))
    assert [result.frame_index for result in results] == [0, 1, 2, 3]
    # Keyframes (every 2nd frame) show what SAM 3 found; the random tracker may lose it in between.
    assert len(results[0].detections) > 0 and len(results[2].detections) > 0
    for result in results:
        found = result.detections
        assert found.mask.shape[1:] == (48, 64) and found.mask.dtype == bool
        assert np.all(found.tracker_id >= 1)
        assert set(found.data["class_name"]) <= {"car", "cup"}
