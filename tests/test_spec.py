"""RunSpec: building, checking, and the round trips a spec travels (JSON, a CVAT function's environment)."""

from __future__ import annotations

import json
import math

import pytest

from gsam2.core.errors import InputError
from gsam2.core.spec import DEFAULT_DETECTOR, RunSpec, SettingError, cli_name, env_name


def test_build_parses_strings_and_normalises_the_prompt():
    spec = RunSpec.build(prompt="Car.  person. car", slice_size="640", reverse="true", box_threshold="0.4")
    assert spec.prompt == ("car", "person")
    assert (spec.slice_size, spec.reverse, spec.box_threshold) == (640, True, 0.4)
    assert spec.detector == DEFAULT_DETECTOR  # unset and None take the defaults
    assert RunSpec.build(prompt=["car", "person"], task=None, slice_size="") == RunSpec.build(prompt="car. person.")


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"prompt": "car. person.", "detector": "florence2", "task": "phrase_grounding", "device": "cpu"},
        {"slice_size": 512, "slice_overlap": 64, "batch_size": 8, "compile": True},
        {"tracker": "sam3", "box_threshold": 0.5, "end_after": 7},
        {"step": 5, "iou_threshold": 0.6, "prompt_type": "box", "reverse": True, "caption_task": "caption"},
    ],
)
def test_a_spec_survives_json_and_the_environment(settings):
    spec = RunSpec.build(**settings)
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert RunSpec.from_env(spec.to_env()) == spec


def test_the_api_token_never_travels_and_never_shows():
    spec = RunSpec.build(detector="dinox", api_token="secret-token")
    assert "secret-token" not in json.dumps(spec.to_dict())
    assert "secret-token" not in json.dumps(spec.to_env())
    assert "secret-token" not in repr(spec)
    assert spec == RunSpec.build(detector="dinox")  # where the token comes from is not the run's identity
    with pytest.raises(SettingError, match="never part of a spec"):
        RunSpec.from_dict({**spec.to_dict(), "api_token": "x"})


@pytest.mark.parametrize(
    ("settings", "setting", "problem"),
    [
        ({"box_threshold": 1.5}, "box_threshold", "between 0 and 1"),
        ({"text_threshold": math.nan}, "text_threshold", "between 0 and 1"),
        ({"iou_threshold": "high"}, "iou_threshold", "must be a number"),
        ({"slice_size": -1}, "slice_size", "at least 1"),
        ({"slice_size": 2.5}, "slice_size", "whole number"),
        ({"slice_size": 512, "slice_overlap": 512}, "slice_overlap", "smaller than the slice size"),
        ({"batch_size": True}, "batch_size", "whole number"),
        ({"step": -1}, "step", "at least 1"),
        ({"prompt_type": "polygon"}, "prompt_type", "mask, box, point"),
        ({"caption_task": "poem"}, "caption_task", "caption, detailed_caption"),
        ({"reverse": "maybe"}, "reverse", "true or false"),
        ({"detector": 3}, "detector", "must be text"),
        ({"slice_sise": 512}, "slice_sise", "is not a setting"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_in_each_spelling(settings, setting, problem):
    with pytest.raises(SettingError) as caught:
        RunSpec.build(**settings)
    error = caught.value
    assert error.setting == setting and problem in str(error) and "\n" not in str(error)
    assert str(error).startswith(setting.replace("_", " "))  # neutral words in the core
    assert error.spelled(cli_name).startswith(cli_name(setting))
    assert error.spelled(env_name).startswith("GSAM2_" + setting.upper())


def test_no_slicing_is_spelled_none_or_zero_and_then_has_no_overlap():
    assert RunSpec.build(slice_size=0, slice_overlap=128) == RunSpec.build() == RunSpec.build(slice_size="0")
    assert RunSpec.build(slice_size=512, slice_overlap=0).slice_overlap == 0


def test_an_empty_prompt_is_refused_by_the_prompt_parser():
    with pytest.raises(InputError, match="empty"):  # the prompt parser's PromptError
        RunSpec.build(prompt="....")


def test_sam3_tracking_refuses_detector_options_only_for_video():
    spec = RunSpec.build(tracker="sam3", slice_size=512)
    spec.check()  # labelling images with this spec never uses the tracker
    with pytest.raises(SettingError, match="slice size 512: a SAM 3 tracker"):
        spec.check_for_video()
    RunSpec.build(tracker="sam3:facebook/sam3", step=5).check_for_video()


def test_spec_is_frozen_and_replace_checks_again():
    spec = RunSpec.build()
    with pytest.raises(AttributeError):
        spec.step = 3  # type: ignore[misc]
    assert spec.replace(step="3").step == 3
    with pytest.raises(SettingError, match="step 0"):
        spec.replace(step=0)
