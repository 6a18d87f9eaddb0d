"""Operator parameters -> RunSpec (operators/params.py): one set of rules for a run's settings."""

from __future__ import annotations

import json

import pytest

from gsam2.core.errors import InputError
from gsam2.core.spec import RunSpec
from gsam2.operators.params import param_problem, spec_from_params


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, {}),
        ({"prompt": "car. person.", "device": "cpu"}, {"prompt": "car. person.", "device": "cpu"}),
        ({"prompt": ""}, {}),  # a prompt-free detector's form leaves it empty
        ({"slice_size": 0, "slice_overlap": 128}, {}),  # 0 = whole images; the overlap is only read with a size
        ({"slice_size": 512, "slice_overlap": 64}, {"slice_size": 512, "slice_overlap": 64}),
        ({"slice_size": 512}, {"slice_size": 512}),
        ({"detector": "florence2", "task": "phrase_grounding"}, {"detector": "florence2", "task": "phrase_grounding"}),
        ({"detector": "owlv2", "task": "phrase_grounding"}, {"detector": "owlv2"}),  # task: Florence-2's only
        (
            {"segmenter": "large", "tracker": "sam3", "box_threshold": 0.5, "text_threshold": 0.1, "batch_size": 8},
            {"segmenter": "large", "tracker": "sam3", "box_threshold": 0.5, "text_threshold": 0.1, "batch_size": 8},
        ),
        (
            {"tracker": "edgetam", "step": 5, "iou_threshold": 0.6, "prompt_type": "box", "reverse": True},
            {"tracker": "edgetam", "step": 5, "iou_threshold": 0.6, "prompt_type": "box", "reverse": True},
        ),
        ({"caption_task": "caption"}, {"caption_task": "caption"}),
        # What is not a run setting is not read: output fields, sharding, the operators' own spellings.
        ({"label_field": "x", "num_shards": 2, "mask_storage": "files", "checkpoint": "y"}, {}),
    ],
)
def test_spec_from_params_gives_the_spec_the_params_describe(params, expected):
    assert spec_from_params(params) == RunSpec.build(**expected)


class FakeContext:
    def __init__(self, secrets):
        self.secrets, self.asked = secrets, []

    def secret(self, name):
        self.asked.append(name)
        return self.secrets.get(name)


def test_the_cloud_token_comes_from_the_secret_and_never_travels():
    ctx = FakeContext({"DDS_API_TOKEN": "secret-token"})
    params = {"detector": "dds-cloud", "prompt": "car."}
    spec = spec_from_params(params, ctx)
    assert spec.api_token == "secret-token"
    assert "secret-token" not in json.dumps(spec.to_dict()) and "secret-token" not in repr(spec)
    assert "secret-token" not in json.dumps(params)
    # Other detectors never ask for it; no secret, no token.
    other = FakeContext({"DDS_API_TOKEN": "secret-token"})
    assert spec_from_params({"prompt": "car."}, other).api_token is None and not other.asked
    assert spec_from_params(params, FakeContext({})).api_token is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"step": 0}, "step 0: must be at least 1"),
        ({"slice_size": -1}, "slice_size -1: must be a whole number of at least 0"),
        ({"slice_size": 2.5}, "slice_size 2.5: must be a whole number"),
        ({"slice_size": 64, "slice_overlap": 64}, "slice_overlap 64: must be at least 0 and smaller than the slice size"),
        ({"box_threshold": float("nan")}, "box_threshold nan: must be a number between 0 and 1"),
        ({"batch_size": True}, "batch_size True: must be a whole number"),
        ({"prompt_type": "scribble"}, "prompt_type 'scribble': choose one of mask, box, point"),
        ({"caption_task": "poem"}, "caption_task 'poem': choose one of"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_param(params, message):
    with pytest.raises(InputError) as error:
        spec_from_params(params)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_the_form_checks_only_the_field_it_flags():
    params = {"step": 0, "box_threshold": 0.5, "slice_size": 64, "slice_overlap": 99}
    param_problem(params, ["box_threshold"])
    with pytest.raises(InputError, match="slice_overlap 99"):
        param_problem(params, ["slice_overlap"])
    with pytest.raises(InputError, match="step 0"):
        param_problem(params, ["step"])
