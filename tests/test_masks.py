"""Masks upsampled only over their support (core/masks.py): the same pixels as full frames, read without them."""

import numpy as np
import pytest
import supervision as sv
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gsam2.core.exports import mask_to_rle
from gsam2.core.masks import box_crop, coco_rle, compact_masks, dense_masks, mask_crop

from .conftest import shapes_image


def blob_logits(seed: int, count: int, size: int = 64) -> torch.Tensor:
    """SAM-2-like logits: negative everywhere, a noisy positive blob per mask (some empty, some at the edges)."""
    rng = np.random.default_rng(seed)
    logits = np.full((count, size, size), -6.0, dtype=np.float32)
    for index in range(count):
        if rng.random() < 0.15:
            continue  # an empty mask
        y, x = rng.integers(-4, size - 2, 2)
        h, w = rng.integers(1, size // 2, 2)
        y0, y1 = max(y, 0), min(max(y + h, 0), size)
        x0, x1 = max(x, 0), min(max(x + w, 0), size)
        logits[index, y0:y1, x0:x1] = rng.normal(1.0, 3.0, (max(y1 - y0, 0), max(x1 - x0, 0)))
    return torch.from_numpy(logits)


def interpolated(logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """What transformers' Sam2ImageProcessor.post_process_masks computes before thresholding."""
    return F.interpolate(logits[None], (height, width), mode="bilinear", align_corners=False)[0]


sizes = st.tuples(st.integers(1, 300), st.integers(1, 300))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(0, 6), size=sizes)
def test_compact_masks_are_the_full_frame_pixels_and_agree_with_f_interpolate(seed, count, size):
    height, width = size
    logits = blob_logits(seed, count)
    compact = compact_masks(logits, height, width)
    dense = dense_masks(logits, height, width)
    assert isinstance(compact, sv.CompactMask) and compact.shape == (count, height, width)
    assert dense.shape == (count, height, width) and dense.dtype == bool
    assert np.array_equal(compact.to_dense(), dense)
    if count == 0:
        return
    # Against F.interpolate: a pixel may differ only where float rounding can flip the sign.
    reference = interpolated(logits, height, width)
    differ = dense != (reference > 0).numpy()
    assert not (differ & (reference.abs().numpy() > 1e-3)).any()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), size=sizes, box=st.tuples(*[st.floats(0, 1)] * 4))
def test_rle_and_box_crops_from_a_compact_mask_equal_those_of_the_full_frame(seed, size, box):
    height, width = size
    logits = blob_logits(seed, 3)
    compact, dense = compact_masks(logits, height, width), dense_masks(logits, height, width)
    left, right = sorted(int(v * width) for v in box[:2])
    top, bottom = sorted(int(v * height) for v in box[2:])
    for index in range(3):
        assert coco_rle(compact, index) == mask_to_rle(dense[index]), "byte-identical COCO RLE"
        assert coco_rle(dense, index) == mask_to_rle(dense[index])
        assert np.array_equal(box_crop(compact, index, left, top, right, bottom), dense[index][top:bottom, left:right])
        crop, x0, y0 = mask_crop(compact, index)
        assert dense[index].sum() == crop.sum(), "no mask pixel outside the crop"
        assert np.array_equal(dense[index][y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]], crop)


def test_crops_are_small_for_small_objects_on_a_large_image():
    logits = torch.full((3, 256, 256), -5.0)
    logits[0, 100:110, 40:52] = 3.0
    logits[1, 0:4, 250:256] = 3.0  # at the top-right corner
    compact = compact_masks(logits, 2160, 3840)  # 4K
    areas = [mask_crop(compact, i)[0].size for i in range(3)]
    assert areas[0] < 12 * 16 * 20 * 20 and areas[1] < 8 * 10 * 20 * 20
    assert areas[2] == 1, "an empty mask is a 1x1 crop"
    assert compact.area.tolist() == dense_masks(logits, 2160, 3840).sum(axis=(1, 2)).tolist()


def test_segmenter_masks_are_the_processors_post_processed_masks(segmenter):
    """On the test media, SAM 2's masks equal transformers' post_process_masks of the same logits, pixel for pixel."""
    from gsam2.core.devices import inference_context

    image = shapes_image(181, 243, seed=4)
    [embedding] = segmenter.embed([image])
    boxes = np.array([[10, 12, 120, 90], [60, 40, 230, 170], [0, 0, 243, 181], [200, 150, 240, 178]], np.float32)
    dense, scores = segmenter.segment_boxes(embedding, boxes)
    compact, compact_scores = segmenter.segment_boxes(embedding, boxes, compact=True)
    inputs = segmenter.processor(original_sizes=[[181, 243]], input_boxes=[boxes.tolist()], return_tensors="pt")
    with inference_context(segmenter.device):
        outputs = segmenter.model(
            image_embeddings=embedding.features, multimask_output=False, input_boxes=inputs["input_boxes"]
        )
    expected = segmenter.processor.post_process_masks(outputs.pred_masks.float(), [[181, 243]], binarize=True)[0]
    assert dense.any(), "the tiny model's masks are not all empty"
    assert np.array_equal(dense, expected[:, 0].numpy())
    assert np.array_equal(compact.to_dense(), dense) and np.array_equal(scores, compact_scores)


@settings(max_examples=60, deadline=None)
@given(
    boxes=st.lists(st.tuples(*[st.floats(-50, 5000, width=32)] * 4), min_size=1, max_size=70),
    height=st.integers(1, 4000),
    width=st.integers(1, 6000),
)
def test_box_prompts_are_the_processors_input_boxes_bit_for_bit(segmenter, boxes, height, width):
    """segment_boxes skips Sam2Processor's list validation; the decoder must get the same bits."""
    boxes = np.array(boxes, np.float32)
    expected = segmenter.processor(original_sizes=[[height, width]], input_boxes=[boxes.tolist()], return_tensors="pt")
    ours = segmenter.box_prompts(boxes, height, width)
    assert ours.dtype == expected["input_boxes"].dtype == torch.float32
    assert torch.equal(ours, expected["input_boxes"])


def test_compact_segment_boxes_with_no_boxes(segmenter):
    [embedding] = segmenter.embed([shapes_image(50, 70)])
    masks, scores = segmenter.segment_boxes(embedding, np.zeros((0, 4)), compact=True)
    assert masks.shape == (0, 50, 70) and scores.shape == (0,)


@pytest.mark.parametrize("offset", [(0, 0), (7, 3)])
def test_cvat_encodings_of_a_crop_equal_those_of_the_full_frame(offset):
    from cvat_sdk.masks import encode_mask

    from gsam2.nuclio.handlers.protocol import cvat_detector_mask, mask_bounds, polygon_points
    from gsam2.nuclio.sdk.detection import encode_crop

    full = np.zeros((40, 50), dtype=bool)
    full[5:20, 9:30] = True
    full[12:14, 30:33] = True
    x0, y0 = offset
    crop = full[y0:30, x0:45]
    assert mask_bounds(crop, offset) == mask_bounds(full)
    assert cvat_detector_mask(crop, offset) == cvat_detector_mask(full)
    assert polygon_points(crop, offset) == polygon_points(full)
    x1, y1, x2, y2 = mask_bounds(full)
    assert encode_crop(crop, offset, (x1, y1, x2, y2)) == encode_mask(full, [x1, y1, x2 + 1, y2 + 1])


def test_drawing_compact_masks_gives_the_same_picture(segmenter):
    from gsam2.core import draw_detections
    from gsam2.core.detections import make_detections

    image = shapes_image(120, 160, seed=2)
    [embedding] = segmenter.embed([image])
    boxes = np.array([[5, 5, 80, 70], [40, 30, 150, 110]], np.float32)
    pictures = []
    for compact in (False, True):
        detections = make_detections(boxes, np.array([0.9, 0.8]), np.array([0, 1]), ["car", "dog"])
        detections.mask, _ = segmenter.segment_boxes(embedding, boxes, compact=compact)
        pictures.append(draw_detections(image, detections))
    assert np.array_equal(*pictures)


@pytest.mark.parametrize("label_type", ["mask", "polygon", "rectangle", "any"])
def test_gsam2_cvat_annotate_shapes_from_compact_masks_equal_those_from_full_frames(segmenter, label_type):
    """``gsam2 cvat annotate`` labels with compact masks; what it uploads must not change."""
    from gsam2.core.detections import make_detections
    from gsam2.nuclio.rest.task_labeling import TaskLabel, shape_for

    image = shapes_image(120, 160, seed=3)
    [embedding] = segmenter.embed([image])
    boxes = np.array([[5, 5, 80, 70], [40, 30, 150, 110], [0, 0, 160, 120]], np.float32)
    label = TaskLabel(1, "car", label_type)
    shapes = []
    for compact in (False, True):
        detections = make_detections(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 0]), ["car"])
        detections.mask, _ = segmenter.segment_boxes(embedding, boxes, compact=compact)
        shapes.append([shape_for(label, detections, i, in_track=track) for i in range(3) for track in (False, True)])
    assert any(shape is not None for shape in shapes[0])
    assert shapes[0] == shapes[1]


def test_deferred_masks_are_finished_into_the_same_compact_masks(detector, segmenter):
    """defer_masks leaves the logits for another thread; finish_masks gives the masks compact_masks would."""
    import threading

    from gsam2.core import ground_and_segment
    from gsam2.core.masks import PENDING_MASKS, finish_masks

    images = [shapes_image(120, 160, seed=1), shapes_image(90, 70, seed=2)]
    options = dict(detector=detector, segmenter=segmenter, box_threshold=0.0, text_threshold=0.0)
    compact = ground_and_segment(images, "car. person.", compact_masks=True, **options)
    deferred = ground_and_segment(images, "car. person.", compact_masks=True, defer_masks=True, **options)
    assert sum(len(d) for d in deferred) > 0
    for detections in deferred:
        assert detections.mask is None and PENDING_MASKS in detections.metadata
    finisher = threading.Thread(target=lambda: [finish_masks(d) for d in deferred])  # as an encode worker does
    finisher.start()
    finisher.join()
    for expected, finished in zip(compact, deferred):
        assert PENDING_MASKS not in finished.metadata
        assert np.array_equal(finished.mask.to_dense(), expected.mask.to_dense())
    assert finish_masks(compact[0]) is compact[0], "nothing pending: unchanged"


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (2, 5), (5, 3)])
def test_tiny_images_are_read_channels_last_by_the_processors(detector, segmenter, shape):
    """The processors get arrays: a 1x1 or 3-pixel image must not be mistaken for channels-first."""
    image = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    assert segmenter.preprocess([image]).shape[:2] == (1, 3)
    inputs = detector.preprocess([image], ["car"])
    assert inputs["pixel_values"].shape[:2] == (1, 3)
