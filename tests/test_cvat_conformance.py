"""Our Nuclio functions answering the requests CVAT 2.40-2.73 really sends, request by request.

Requests are built as CVAT's lambda manager builds them (views.py ``LambdaFunction.invoke``)
from what the UI sends (tools-control.tsx, interactionHandler.ts); every answer is checked
with the rules CVAT applies (tests/cvat_rules.py). Handlers get nuclio_sdk's real Context and
Event through tests/nuclio_harness.py.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from gsam2.nuclio.handlers import detector, interactor, tracker
from gsam2.nuclio.handlers.cache import ExpiringLRU
from gsam2.nuclio.generate import function_config, write_function
from gsam2.nuclio.handlers.tracker_state import ObjectState

from . import cvat_rules
from .conftest import shapes_image
from .nuclio_harness import invoke, make_context

IMAGE = shapes_image(90, 120)
HEIGHT, WIDTH = IMAGE.shape[:2]


def b64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# ---------------------------------------------------------------- interactor


@pytest.fixture
def interactor_context(models_env):
    context = make_context()
    interactor.init_context(context)
    return context


def ui_click(pos, neg=(), box=(), image=IMAGE, **extra):
    """The interactor payload: the UI's fields as the lambda manager forwards them (obj_bbox always there)."""
    return {"image": b64(image), "pos_points": [list(p) for p in pos], "neg_points": [list(p) for p in neg],
            "obj_bbox": [list(p) for p in box], **extra}


@pytest.mark.parametrize(
    "payload",
    [
        ui_click([(30, 40)]),  # a click, no box: obj_bbox is []
        ui_click([(30, 40), (50, 20)], neg=[(5, 5)]),
        ui_click([(-0.4, 40)]),  # Math.round(-0.4) >= 0: the canvas accepts it
        ui_click([(WIDTH - 0.3, HEIGHT - 0.1)]),
        ui_click([], box=[(10, 10), (60, 50)]),  # "start with a box", no click yet
        ui_click([(30, 30)], neg=[(55, 45)], box=[(10, 10), (60, 50)]),
        {**ui_click([(30, 40)]), "obj_bbox": None},  # API clients may send null
    ],
    ids=["click", "clicks", "click-at-x=-0.4", "click-at-the-far-edge", "box-only", "box-and-clicks", "null-box"],
)
def test_interactor_answers_the_ui_requests(interactor_context, payload):
    status, body = invoke(interactor, interactor_context, payload)
    assert status == 200, body
    mask = cvat_rules.interactor_mask(body, HEIGHT, WIDTH)
    assert mask.any(), "a visible mask, never an empty answer the UI silently ignores"


def test_interactor_click_half_a_pixel_out_is_the_edge_pixel(interactor_context):
    _, outside = invoke(interactor, interactor_context, ui_click([(-0.4, 40.2)]))
    _, edge = invoke(interactor, interactor_context, ui_click([(0, 40.2)]))
    assert outside == edge


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (ui_click([(-0.6, 10)]), "lies outside the 120x90 image"),
        (ui_click([(WIDTH, 10)]), "lies outside the 120x90 image"),
        (ui_click([(1,)]), "must be [x, y]"),
        (ui_click([]), "at least one positive point"),
        (ui_click([(5, 5)], box=[(200, 200), (300, 300)]), "is empty inside"),
        ({**ui_click([(5, 5)]), "obj_bbox": [[1, 2]]}, "'obj_bbox' must be"),
        (ui_click([(5, 5)], text_prompts=[3]), "'text_prompts' must be"),
        (ui_click([(5, 5)], text_prompts=" . "), "'text_prompts'"),
        (ui_click([(5, 5)], text_prompts="!!! ??? ---"), "has no letter or digit"),
    ],
)
def test_interactor_bad_requests_get_400_and_it_keeps_serving(interactor_context, payload, message):
    status, body = invoke(interactor, interactor_context, payload)
    assert status == 400 and message in body["error"], body
    assert invoke(interactor, interactor_context, ui_click([(3, 3)]))[0] == 200


def test_interactor_falls_back_to_sam2s_alternatives_when_its_answer_is_empty(interactor_context, monkeypatch):
    segmenter = interactor_context.user_data.segmenter
    real = segmenter.segment_prompt
    calls = []

    def single_answer_empty(embedding, points, labels, box=None, multimask=False):
        masks, scores = real(embedding, points, labels, box, multimask=multimask)
        calls.append(multimask)
        if not multimask:
            masks = np.zeros_like(masks)  # SAM 2's single answer came back empty
        return masks, scores

    monkeypatch.setattr(segmenter, "segment_prompt", single_answer_empty)
    status, body = invoke(interactor, interactor_context, ui_click([(30, 40)]))
    assert status == 200 and calls == [False, True]
    embedding = segmenter.embed([IMAGE])[0]
    candidates, scores = real(embedding, np.array([[30.0, 40.0]]), np.array([1]), multimask=True)
    best = next(candidates[i] for i in np.argsort(-scores, kind="stable") if candidates[i].any())
    np.testing.assert_array_equal(cvat_rules.interactor_mask(body, HEIGHT, WIDTH), best)


def test_interactor_with_nothing_found_says_so(interactor_context, monkeypatch):
    segmenter = interactor_context.user_data.segmenter

    def nothing(embedding, points, labels, box=None, multimask=False):
        count = 3 if multimask else 1
        return np.zeros((count, embedding.height, embedding.width), bool), np.zeros(count, np.float32)

    monkeypatch.setattr(segmenter, "segment_prompt", nothing)
    status, body = invoke(interactor, interactor_context, ui_click([(30, 40)]))
    assert status == 422 and "no object" in body["error"]
    monkeypatch.undo()
    assert invoke(interactor, interactor_context, ui_click([(30, 40)]))[0] == 200


class FixedBoxesDetector:
    """Speaks the Detector interface: the same scored boxes for every image."""

    name, requires_prompt, produces_masks = "fixed", True, False

    def __init__(self, boxes, scores):
        self.boxes, self.scores, self.calls = np.array(boxes, np.float32), np.array(scores, np.float32), []

    def validate_phrases(self, phrases):
        pass

    def detect(self, images, phrases, box_threshold, text_threshold):
        self.calls.append(list(phrases))
        return [sv.Detections(xyxy=self.boxes.copy(), confidence=self.scores.copy(),
                              class_id=np.zeros(len(self.boxes), int)) for _ in images]


def sam2_mask(context, box=None, points=None, labels=None):
    segmenter = context.user_data.segmenter
    [embedding] = segmenter.embed([IMAGE])
    masks, _ = segmenter.segment_prompt(embedding, points, labels, box)
    return masks[0]


def test_interactor_text_prompt_grounds_then_segments(interactor_context):
    boxes = [[5, 5, 40, 40], [50, 30, 110, 85]]
    fake = FixedBoxesDetector(boxes, [0.9, 0.6])
    interactor_context.user_data.detector = fake
    # The text alone: the best-scoring box.
    status, body = invoke(interactor, interactor_context, ui_click([], text_prompts=["the red car"]))
    assert status == 200 and fake.calls == [["the red car"]]
    np.testing.assert_array_equal(cvat_rules.interactor_mask(body, HEIGHT, WIDTH),
                                  sam2_mask(interactor_context, box=np.array(boxes[0], np.float32)))
    # With a click: the best box that holds the click, and the click too.
    status, body = invoke(interactor, interactor_context, ui_click([(80, 60)], text_prompts="the red car"))
    assert status == 200
    expected = sam2_mask(interactor_context, np.array(boxes[1], np.float32), np.array([[80.0, 60.0]]), np.array([1]))
    np.testing.assert_array_equal(cvat_rules.interactor_mask(body, HEIGHT, WIDTH), expected)


def test_interactor_text_prompt_with_nothing_found(interactor_context):
    interactor_context.user_data.detector = FixedBoxesDetector(np.zeros((0, 4)), [])
    status, body = invoke(interactor, interactor_context, ui_click([], text_prompts=["unicorn"]))
    assert status == 422 and "unicorn" in body["error"]
    assert invoke(interactor, interactor_context, ui_click([(30, 40)], text_prompts=["unicorn"]))[0] == 200


def test_interactor_text_prompt_with_the_real_loading_path(interactor_context, models_env):
    """The grounding model is loaded on the first text prompt, through the project's loader."""
    models_env.setenv("GSAM2_BOX_THRESHOLD", "0")
    models_env.setenv("GSAM2_TEXT_THRESHOLD", "0")
    assert interactor_context.user_data.detector is None
    status, body = invoke(interactor, interactor_context, ui_click([(30, 40)], text_prompts=["car"]))
    assert status == 200, body
    assert interactor_context.user_data.detector is not None
    assert cvat_rules.interactor_mask(body, HEIGHT, WIDTH).any()


def test_interactor_region_of_interest_crop(interactor_context):
    """CVAT crops the frame, moves the clicks into the crop, and pastes the answer back."""
    full = shapes_image(140, 200, seed=3)
    roi = [40, 30, 160, 120]  # xtl, ytl, xbr, ybr as the API takes it
    crop = full[roi[1] : roi[3], roi[0] : roi[2]]
    clicks = [[90, 70]]
    moved = [[x - roi[0], y - roi[1]] for x, y in clicks]  # ROIHelper.translate_prompt_points
    status, body = invoke(interactor, interactor_context, ui_click(moved, image=crop))
    assert status == 200
    pasted = cvat_rules.translate_interactor_response(body, roi, 140, 200)
    mask = cvat_rules.interactor_mask(pasted, 140, 200)
    assert mask.any() and not mask[:, : roi[0]].any() and not mask[: roi[1]].any()
    np.testing.assert_array_equal(mask[roi[1] : roi[3], roi[0] : roi[2]], np.array(body["mask"]) > 0)


# ---------------------------------------------------------------- tracker


@pytest.fixture
def tracker_context(models_env):
    context = make_context()
    tracker.init_context(context)
    return context


SUPPORTED = json.loads(json.dumps(["rectangle", "polygon"]))


def frames(count: int) -> list[np.ndarray]:
    """A bright square moving right two pixels a frame."""
    sequence = []
    for i in range(count):
        frame = np.full((HEIGHT, WIDTH, 3), 60, np.uint8)
        frame[30:60, 10 + 2 * i : 40 + 2 * i] = (220, 40, 40)
        sequence.append(frame)
    return sequence


def test_tracker_declares_what_cvat_needs_for_polygons():
    annotations = function_config("sam2-tracker", False)["metadata"]["annotations"]
    # views.py: supported_shape_types, comma-separated; without it CVAT refuses polygons.
    assert [t.strip() for t in annotations["supported_shape_types"].split(",")] == SUPPORTED


@pytest.mark.parametrize("start", ["states-empty", "states-missing"])
def test_tracker_start_then_twenty_steps_as_cvat_240_sends_them(tracker_context, start):
    video = frames(21)
    shapes = [{"type": "rectangle", "points": [10.0, 30.0, 40.0, 60.0]},
              {"type": "polygon", "points": [60.0, 10.0, 100.0, 10.0, 100.0, 50.0, 60.0, 50.0]}]
    payload = {"image": b64(video[0]), "shapes": shapes, **({"states": []} if start == "states-empty" else {})}
    status, body = invoke(tracker, tracker_context, payload)
    assert status == 200, body
    cvat_rules.check_tracker_response(body, 2, SUPPORTED)
    assert body["shapes"] == shapes, "on the starting frame the user's own shapes stand"
    states = cvat_rules.cvat_round_trip(body["states"])
    for frame in video[1:]:
        # CVAT >= 2.40: no shapes, nulls in their place (views.py pads them)
        status, body = invoke(tracker, tracker_context, {"image": b64(frame), "shapes": [None, None], "states": states})
        assert status == 200, body
        cvat_rules.check_tracker_response(body, 2, SUPPORTED)
        assert [shape["type"] for shape in body["shapes"]] == ["rectangle", "polygon"]
        states = cvat_rules.cvat_round_trip(body["states"])
    assert [state["step"] for state in states] == [20, 20]
    assert len(tracker_context.user_data.memories) == 2, "the in-process memory served all twenty steps"


def test_tracker_legacy_form_without_supported_shape_types(tracker_context):
    """Older CVAT (or a function without the annotation): bare lists in and out, [null] states to start."""
    status, body = invoke(tracker, tracker_context, {"image": b64(IMAGE), "shapes": [[10, 10, 50, 40]], "states": [None]})
    assert status == 200
    cvat_rules.check_tracker_response(body, 1, None)
    status, body = invoke(tracker, tracker_context, {"image": b64(IMAGE), "shapes": [[10, 10, 50, 40]],
                                                     "states": cvat_rules.cvat_round_trip(body["states"])})
    assert status == 200
    cvat_rules.check_tracker_response(body, 1, None)


def lose_everything(monkeypatch):
    """SAM 2 reports every object gone (its masks empty), as when the object left the frame."""
    from gsam2.core.tracker import TrackingSession

    real = TrackingSession.step

    def step(self, frame_index, frame=None, encoded=None):
        tracked = real(self, frame_index, frame, encoded)
        tracked.masks[:] = False
        tracked.scores[:] = -1.0
        return tracked

    monkeypatch.setattr(TrackingSession, "step", step)


def test_tracker_answers_a_lost_object_with_its_last_shape_and_goes_on(tracker_context, monkeypatch):
    video = frames(6)
    shapes = [{"type": "rectangle", "points": [10, 30, 40, 60]}, {"type": "polygon", "points": [60, 10, 100, 10, 80, 50]}]
    _, body = invoke(tracker, tracker_context, {"image": b64(video[0]), "shapes": shapes, "states": []})
    _, body = invoke(tracker, tracker_context, {"image": b64(video[1]), "shapes": [None, None],
                                                "states": cvat_rules.cvat_round_trip(body["states"])})
    last = body
    with monkeypatch.context() as patch:
        lose_everything(patch)
        for frame in video[2:4]:
            status, body = invoke(tracker, tracker_context, {"image": b64(frame), "shapes": [None, None],
                                                             "states": cvat_rules.cvat_round_trip(body["states"])})
            assert status == 200
            cvat_rules.check_tracker_response(body, 2, SUPPORTED)
            assert body["shapes"][0]["points"] == pytest.approx(last["states"][0]["box"], abs=0.01)
            assert body["states"][0]["box"] == last["states"][0]["box"]
    status, body = invoke(tracker, tracker_context, {"image": b64(video[4]), "shapes": [None, None],
                                                     "states": cvat_rules.cvat_round_trip(body["states"])})
    assert status == 200 and [s["step"] for s in body["states"]] == [4, 4], "the states stayed usable"


def test_tracker_resumes_from_the_state_alone(tracker_context, models_env):
    """A token this process no longer holds (cache cleared, or a fresh replica) resumes from the state."""
    video = frames(5)
    _, body = invoke(tracker, tracker_context, {"image": b64(video[0]), "shapes": [{"type": "rectangle",
                                                "points": [10, 30, 40, 60]}], "states": []})
    states = cvat_rules.cvat_round_trip(body["states"])
    tracker_context.user_data.memories = ExpiringLRU(8, 3600)  # the process forgot everything
    status, body = invoke(tracker, tracker_context, {"image": b64(video[1]), "shapes": [None], "states": states})
    assert status == 200
    cvat_rules.check_tracker_response(body, 1, SUPPORTED)
    assert body["states"][0]["token"] != states[0]["token"], "a new SAM 2 memory, started from the state's box"
    replica = make_context()
    tracker.init_context(replica)
    status, again = invoke(tracker, replica, {"image": b64(video[2]), "shapes": [None],
                                              "states": cvat_rules.cvat_round_trip(body["states"])})
    assert status == 200
    cvat_rules.check_tracker_response(again, 1, SUPPORTED)


def test_tracker_state_replayed_from_an_earlier_frame_restarts(tracker_context, monkeypatch):
    video = frames(4)
    _, body = invoke(tracker, tracker_context, {"image": b64(video[0]), "shapes": [[10, 30, 40, 60]], "states": []})
    first = cvat_rules.cvat_round_trip(body["states"])
    _, body = invoke(tracker, tracker_context, {"image": b64(video[1]), "shapes": [None], "states": first})
    status, replay = invoke(tracker, tracker_context, {"image": b64(video[1]), "shapes": [None], "states": first})
    assert status == 200
    assert replay["states"][0]["token"] != first[0]["token"], "the memory moved on: the old state starts afresh"


def test_tracker_state_is_small_and_carries_the_object():
    mask = np.zeros((1080, 1920), bool)
    mask[100:900, 200:1700] = True
    mask[300:400, 500:600] = False
    state = ObjectState.new("polygon", True, (200, 100, 1700, 900), mask)
    encoded = json.dumps(state.to_json(), separators=(",", ":"))
    assert len(encoded) < 400
    back = ObjectState.from_json(json.loads(encoded))
    assert back is not None and back.box == state.box and back.token == state.token
    restored = back.full_mask(1080, 1920)
    assert (restored == mask).mean() > 0.99
    for bad in (None, "a-token-of-an-older-version", {"v": 1}, {**state.to_json(), "box": [5, 5, 1, 1]},
                {**state.to_json(), "mask": [40, 40, "AAAA"]}, {**state.to_json(), "mask": [2, 2, "%%"]}):
        assert ObjectState.from_json(bad) is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"shapes": [], "states": []}, "nothing to track"),
        ({"shapes": [{"type": "points", "points": [1, 2]}], "states": []}, "rectangles and polygons"),
        ({"shapes": [{"type": "polygon", "points": [1, 2, 3, 4]}], "states": []}, "must be a rectangle"),
        ({"shapes": [[1, 2, 3]], "states": []}, "must be a rectangle"),
        ({"shapes": [[500, 500, 600, 600]]}, "does not cover"),
        ({"shapes": [None], "states": ["not-a-state"]}, "not a state of this tracker"),
        ({"shapes": [None], "states": [None]}, "both null"),
        ({"shapes": [None, None], "states": [{}]}, "as long as each other"),
        ({"shapes": {"type": "rectangle"}}, "'shapes' must be a list"),
        ({"states": "abc"}, "'states' must be a list"),
    ],
)
def test_tracker_bad_requests_get_400_and_it_keeps_serving(tracker_context, payload, message):
    status, body = invoke(tracker, tracker_context, {"image": b64(IMAGE), **payload})
    assert status == 400 and message in body["error"], body
    assert invoke(tracker, tracker_context, {"image": b64(IMAGE), "shapes": [[1, 1, 20, 20]], "states": []})[0] == 200


# ---------------------------------------------------------------- detector


class FixedMasksDetector:
    """Speaks the Detector interface of a mask-making backend (as SAM 3): given masks, one phrase each."""

    name, requires_prompt, produces_masks = "fixed-masks", True, True

    def __init__(self, masks: np.ndarray, class_ids: list[int]):
        self.masks, self.class_ids = masks, class_ids

    def validate_phrases(self, phrases):
        pass

    def detect(self, images, phrases, box_threshold, text_threshold):
        detections = sv.Detections(xyxy=sv.mask_to_xyxy(self.masks).astype(np.float32), mask=self.masks.copy(),
                                   confidence=np.full(len(self.masks), 0.9, np.float32),
                                   class_id=np.array(self.class_ids, int))
        detections.data["class_name"] = np.array([phrases[i] for i in self.class_ids])
        return [detections for _ in images]


def hard_masks() -> tuple[np.ndarray, list[str]]:
    """Masks whose polygons are degenerate or unusual: CVAT must still accept the frame."""
    masks, names = np.zeros((6, HEIGHT, WIDTH), bool), []
    masks[0, 10, 10] = True
    names.append("one pixel")
    masks[1, 20, 5:60] = True
    names.append("one-pixel line")
    for i in range(30):
        masks[2, 40 + i, 40 + i] = True
    names.append("diagonal")
    masks[3, 50:80, 80:110] = True
    masks[3, 58:72, 88:102] = False
    names.append("ring")
    masks[4, 5:15, 90:100] = True
    masks[4, 25:35, 100:115] = True
    names.append("two blobs")
    names.append("empty")  # SAM 2 gave nothing for the box
    return masks, names


@pytest.fixture
def detector_context(models_env, tmp_path):
    def make(label_type="mask"):
        from gsam2.nuclio.generate import DetectorChoice

        folder = write_function(tmp_path / label_type, "grounded-sam2-detector", "det", ["Car", "person"],
                                DetectorChoice(label_type=label_type))
        models_env.setenv("GSAM2_FUNCTION_CONFIG", str(folder / "function.yaml"))
        context = make_context()
        detector.init_context(context)
        masks, _ = hard_masks()
        context.user_data.detector = FixedMasksDetector(masks, [0, 1, 0, 1, 0, 1])
        context.user_data.segmenter = None
        context.spec = json.loads(function_config("grounded-sam2-detector", False, labels=["Car", "person"],
                                                  detector=DetectorChoice(label_type=label_type))
                                  ["metadata"]["annotations"]["spec"])
        return context

    return make


@pytest.mark.parametrize("conv_mask_to_poly", [False, True])
def test_detector_answer_is_stored_by_cvat_with_and_without_polygon_conversion(detector_context, conv_mask_to_poly):
    context = detector_context("mask")
    status, items = invoke(detector, context, {"image": b64(IMAGE), "threshold": 0.5})
    assert status == 200
    masks, names = hard_masks()
    assert len(items) == 5, "the empty mask is dropped, not sent as a rectangle under a mask label"
    stored = cvat_rules.stored_detector_shapes(items, context.spec, {"Car": "mask", "person": "polygon"},
                                               conv_mask_to_poly)
    assert len(stored) == 5
    for item, mask, name in zip(items, masks, names):
        np.testing.assert_array_equal(cvat_rules.decode_detector_mask(item["mask"], HEIGHT, WIDTH), mask, name)
    by_name = dict(zip(names, items))
    for degenerate in ("one pixel", "one-pixel line", "diagonal"):
        assert "points" not in by_name[degenerate], f"{degenerate}: no polygon of 3+ points, so CVAT keeps a mask"
    assert len(by_name["ring"]["points"]) >= 8 and len(by_name["two blobs"]["points"]) >= 6


def test_detector_rectangle_labels(detector_context):
    context = detector_context("rectangle")
    assert {label["type"] for label in context.spec} == {"rectangle"}
    status, items = invoke(detector, context, {"image": b64(IMAGE)})
    assert status == 200 and len(items) == 6 and all(i["type"] == "rectangle" and "mask" not in i for i in items)
    # CVAT keeps rectangles for rectangle and "any" task labels, and drops them for mask labels.
    assert len(cvat_rules.stored_detector_shapes(items, context.spec, {"Car": "rectangle", "person": "any"}, False)) == 6
    assert cvat_rules.stored_detector_shapes(items, context.spec, {"Car": "mask", "person": "mask"}, False) == []


def test_detector_mask_labels_map_to_mask_and_polygon_task_labels_only(detector_context):
    context = detector_context("mask")
    _, items = invoke(detector, context, {"image": b64(IMAGE)})
    assert cvat_rules.stored_detector_shapes(items, context.spec, {"Car": "rectangle", "person": "rectangle"}, True) == []


@pytest.mark.parametrize(("threshold", "status"), [(0.35, 200), (35, 200), (100, 200), (0, 200), (101, 400),
                                                    (-1, 400), ("35", 400), (True, 400)])
def test_detector_threshold_as_fraction_or_percentage(detector_context, threshold, status):
    context = detector_context("mask")
    seen = []
    fixed = context.user_data.detector
    real = fixed.detect
    fixed.detect = lambda images, phrases, box_threshold, text_threshold: seen.append(box_threshold) or real(
        images, phrases, box_threshold, text_threshold)
    answer, body = invoke(detector, context, {"image": b64(IMAGE), "threshold": threshold})
    assert answer == status, body
    if status == 200:
        assert seen == [pytest.approx(threshold / 100 if threshold > 1 else threshold)]
    else:
        assert "fraction (0-1) or a percentage (0-100)" in body["error"]


def test_detector_labels_that_differ_only_in_case_are_refused(tmp_path):
    from gsam2.nuclio.generate import main

    labels = tmp_path / "labels.txt"
    labels.write_text("Car\ncar\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "out"), "--labels", str(labels)])
    assert exit_info.value.code == 2
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("function.yaml"))


def test_detector_extreme_strip_is_a_400_and_it_keeps_serving(models_env, tmp_path):
    folder = write_function(tmp_path, "grounded-sam2-detector", "det", ["car"])
    models_env.setenv("GSAM2_FUNCTION_CONFIG", str(folder / "function.yaml"))
    context = make_context()
    detector.init_context(context)
    status, body = invoke(detector, context, {"image": b64(shapes_image(10, 20000))})
    assert status == 400 and "too elongated for Grounding DINO" in body["error"]
    assert invoke(detector, context, {"image": b64(IMAGE)})[0] == 200


@pytest.mark.parametrize(
    ("module", "payload"),
    [
        ("tracker", {"shapes": [[float("nan"), 1, 20, 20]], "states": []}),
        ("tracker", {"shapes": [{"type": "rectangle", "points": [1, 1, float("inf"), 20]}]}),
        ("interactor", {"pos_points": [[float("nan"), 3]], "neg_points": [], "obj_bbox": []}),
        ("interactor", {"pos_points": [[3, 3]], "neg_points": [], "obj_bbox": [[1, float("nan")], [20, 20]]}),
        ("interactor", {"pos_points": [[3, 3]], "neg_points": [], "obj_bbox": [[1, None], [20, 20]]}),
    ],
)
def test_nan_and_infinity_are_400s(models_env, module, payload):
    """JSON with NaN (Python's json accepts it) never reaches the models nor comes back in an answer."""
    handler_module = {"tracker": tracker, "interactor": interactor}[module]
    context = make_context()
    handler_module.init_context(context)
    body = json.dumps({"image": b64(IMAGE), **payload}).encode()  # json.dumps writes NaN and Infinity
    status, answer = invoke(handler_module, context, body)
    assert status == 400 and len(answer["error"].splitlines()) == 1
