"""The cvat-sdk functions, called through cvat-sdk's interfaces with contexts that implement its protocols."""

from __future__ import annotations

import attrs
import cvat_sdk.auto_annotation as cvataa
import numpy as np
import pytest
from cvat_sdk.masks import decode_mask
from PIL import Image

from gsam2.core import ground_and_segment, load_detector, load_segmenter
from gsam2.nuclio.sdk import detection as sdk_detection
from gsam2.nuclio.sdk import interaction as sdk_interaction
from gsam2.nuclio.sdk import tracking as sdk_tracking

from .conftest import shapes_image

IMAGE = shapes_image(90, 120)


class DetectionContext(cvataa.DetectionFunctionContext):
    def __init__(self, conf_threshold=None, conv_mask_to_poly=False):
        self._threshold, self._poly = conf_threshold, conv_mask_to_poly

    @property
    def frame_name(self):
        return "frame_000000.png"

    @property
    def conf_threshold(self):
        return self._threshold

    @property
    def conv_mask_to_poly(self):
        return self._poly


@attrs.frozen
class Prompts(cvataa.InteractionPrompts):
    pos_points: list = attrs.field(factory=list)
    neg_points: list = attrs.field(factory=list)
    bounding_box: tuple | None = None


class ShapeContext(cvataa.TrackingFunctionShapeContext):
    def __init__(self, shape_type):
        self._type = shape_type

    @property
    def original_shape_type(self):
        return self._type


@pytest.fixture
def detection(tiny_models):
    return sdk_detection.create(
        prompt="car. red square.",
        detector=str(tiny_models["grounding-dino"]),
        segmenter=str(tiny_models["sam2"]),
        device="cpu",
        text_threshold=0.0,
    )


def test_spec_labels_are_the_prompt(detection):
    assert [label.name for label in detection.spec.labels] == ["car", "red square"]


def test_detect_masks_decode_to_the_core_masks(detection, tiny_models):
    shapes = detection.detect(DetectionContext(conf_threshold=0.5), Image.fromarray(IMAGE))
    [expected] = ground_and_segment(
        [IMAGE],
        ["car", "red square"],
        detector=load_detector(str(tiny_models["grounding-dino"]), device="cpu"),
        segmenter=load_segmenter(str(tiny_models["sam2"]), device="cpu"),
        box_threshold=0.5,
        text_threshold=0.0,
    )
    masks = [m for m in expected.mask if m.any()]
    assert len(shapes) == len(masks) > 0
    for shape, mask in zip(shapes, masks):
        assert shape.type.value == "mask" and shape.frame == 0 and shape.label_id in (0, 1)
        np.testing.assert_array_equal(decode_mask(shape.points, image_width=120, image_height=90), mask)


def test_conf_threshold_and_polygons(detection):
    shapes = detection.detect(DetectionContext(conf_threshold=0.5, conv_mask_to_poly=True), Image.fromarray(IMAGE))
    assert shapes and all(shape.type.value == "polygon" and len(shape.points) >= 6 for shape in shapes)
    assert detection.detect(DetectionContext(conf_threshold=1.0), Image.fromarray(IMAGE)) == []


def test_default_vocabulary_is_coco(tiny_models):
    function = sdk_detection.create(
        detector=str(tiny_models["grounding-dino"]), segmenter=str(tiny_models["sam2"]), device="cpu"
    )
    assert len(function.spec.labels) == 80 and function.spec.labels[0].name == "person"


def test_interaction_function(tiny_models):
    function = sdk_interaction.create(segmenter=str(tiny_models["sam2"]), device="cpu")
    embedding = function.preprocess_image(None, Image.fromarray(IMAGE))
    for prompts in (
        Prompts(pos_points=[(30, 40)], neg_points=[(5, 5)]),
        Prompts(pos_points=[(30, 40)], bounding_box=((10, 10), (60, 50))),
    ):
        shapes = function.detect(None, embedding, prompts)
        for shape in shapes:
            assert shape.type == "mask"
            assert decode_mask(shape.points, image_width=120, image_height=90).any()


@pytest.mark.parametrize(
    ("shape_type", "points"), [("rectangle", [10, 10, 50, 40]), ("polygon", [10, 10, 50, 10, 50, 40, 10, 40])]
)
def test_tracking_function(tiny_models, shape_type, points):
    function = sdk_tracking.create(tracker=str(tiny_models["sam2-video"]), device="cpu")
    assert shape_type in function.spec.supported_shape_types
    context = ShapeContext(shape_type)
    state = function.init_tracking_state(
        context,
        function.preprocess_image(context, Image.fromarray(IMAGE)),
        cvataa.TrackableShape(type=shape_type, points=points),
    )
    for shift in (2, 4):
        result = function.track(
            context, function.preprocess_image(context, Image.fromarray(np.roll(IMAGE, shift, 1))), state
        )
        assert result is None or result.type == shape_type
    assert state.frames == 3


def test_create_takes_every_setting_as_cvat_cli_strings(tiny_models):
    """``cvat-cli -p name=str:value``: the function's run spec is RunSpec.build of the same values."""
    from gsam2.core.spec import RunSpec

    detector, segmenter = f"mm-grounding-dino:{tiny_models['mm-grounding-dino']}", str(tiny_models["sam2"])
    function = sdk_detection.create(
        prompt="car. red square.", detector=detector, segmenter=segmenter, device="cpu", slice_size="64",
        slice_overlap="16", box_threshold="0.3", text_threshold="0.2", max_image_pixels="1000000",
    )
    assert function.run.spec == RunSpec.build(
        prompt=["car", "red square"], detector=detector, segmenter=segmenter, device="cpu", slice_size=64,
        slice_overlap=16, box_threshold=0.3, text_threshold=0.2,
    )
    assert function.max_image_pixels == 1_000_000 and [label.name for label in function.spec.labels] == ["car", "red square"]
    assert isinstance(function.detect(DetectionContext(conf_threshold=0.0), Image.fromarray(IMAGE)), list)
    assert sdk_detection.create(detector=detector, segmenter=segmenter, device="cpu", slice_size="0").run.spec.slice_size is None

    interaction = sdk_interaction.create(segmenter=segmenter, device="cpu", box_threshold="0.5")
    assert interaction.run.spec == RunSpec.build(segmenter=segmenter, device="cpu", box_threshold=0.5)

    tracker = f"edgetam:{tiny_models['edgetam-video']}"
    tracking = sdk_tracking.create(tracker=tracker, device="cpu")
    assert tracking.run.spec == RunSpec.build(tracker=tracker, device="cpu")
    context = ShapeContext("rectangle")
    state = tracking.init_tracking_state(context, tracking.preprocess_image(context, Image.fromarray(IMAGE)),
                                         cvataa.TrackableShape(type="rectangle", points=[10, 10, 50, 40]))
    tracking.track(context, tracking.preprocess_image(context, Image.fromarray(np.roll(IMAGE, 2, 1))), state)


def test_create_refuses_a_bad_setting_in_one_line_naming_the_parameter(tiny_models):
    with pytest.raises(ValueError, match=r"^slice_overlap 600: .*512"):
        sdk_detection.create(detector=str(tiny_models["grounding-dino"]), slice_size="512", slice_overlap="600")
    with pytest.raises(ValueError, match=r"^box_threshold 'high': must be a number"):
        sdk_interaction.create(box_threshold="high")
