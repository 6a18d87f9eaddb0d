"""One intent, every entry point, one RunSpec.

For every setting of :class:`RunSpec`, the same intent is expressed the way
each entry point takes it (``gsam2`` options, operator params, a CVAT
function's environment, cvat-sdk ``create(**params)`` strings, keyword
arguments) and must give an equal spec. A setting an entry point cannot
express fails the test unless :data:`NOT_EXPRESSED` lists it with its reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from gsam2.core.spec import RunSpec, env_name

#: A non-default value of every setting (the prompt is set apart: some entry points always need one).
VALUES: dict[str, Any] = {
    "prompt": "car. traffic light.",
    "detector": "owlv2:/models/owlv2",
    "task": "phrase_grounding",
    "slice_size": 640,
    "slice_overlap": 64,
    "segmenter": "large",
    "tracker": "edgetam",
    "device": "cpu",
    "box_threshold": 0.45,
    "text_threshold": 0.3,
    "batch_size": 8,
    "compile": True,
    "step": 5,
    "iou_threshold": 0.6,
    "prompt_type": "box",
    "reverse": True,
    "end_after": 7,
    "caption_task": "caption",
}
SETTINGS = [item.name for item in dataclasses.fields(RunSpec) if item.name != "api_token"]
BASE = {"prompt": "car."}  # what every run here is given besides the setting under test
#: Entry points whose own defaults differ from the spec's.
OWN_DEFAULTS = {"gsam2 autolabel": {"detector": "florence2", "caption_task": "more_detailed_caption"}}


def cli(command: list[str]) -> Callable[[dict[str, Any]], RunSpec]:
    """The spec ``gsam2 COMMAND ...`` builds for the settings, spelled as options."""

    def build(settings: dict[str, Any]) -> RunSpec:
        from gsam2.cli import build_parser, cli_option, spec_from_args

        argv = list(command)
        for name, value in settings.items():
            option = "--florence2-task" if (name == "task" and command[0] == "cvat") else cli_option(name)
            argv += [option] if value is True else [option, str(value)]
        return spec_from_args(build_parser().parse_args(argv))

    return build


def environment(settings: dict[str, Any]) -> RunSpec:
    """The spec a CVAT function reads from its environment (what the function generator writes)."""
    env = {env_name(name): ("1" if value is True else str(value)) for name, value in settings.items()}
    return RunSpec.from_env(env)


def cvat_sdk_parameters(settings: dict[str, Any]) -> RunSpec:
    """The spec a cvat-sdk function's ``create(**params)`` builds from ``cvat-cli -p name=str:value`` strings."""
    from gsam2.nuclio.sdk.params import spec_from_params

    return spec_from_params({name: str(value) for name, value in settings.items()})


def generated_function(settings: dict[str, Any]) -> RunSpec:
    """The spec a function made by the generator reads from its ``function.yaml`` (options, else --spec-json)."""
    import contextlib
    import io
    import json
    import tempfile
    from pathlib import Path

    import yaml

    from gsam2.core.spec import cli_name
    from gsam2.nuclio.generate import SPEC_OPTIONS, main

    argv = ["--kind", "sam2-tracker" if "tracker" in settings else "grounded-sam2-detector"]
    rest = {}
    for name, value in settings.items():
        if name in SPEC_OPTIONS:
            argv += [cli_name(name), str(value)]
        else:
            rest[name] = value
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
        main([folder, *argv, "--spec-json", json.dumps(rest)])
        [config] = Path(folder).glob("*/function.yaml")
        env = yaml.safe_load(config.read_text())["spec"]["env"]
    return RunSpec.from_env({item["name"]: item["value"] for item in env if item["name"] != "GSAM2_DEVICE"})


def operator_params(settings: dict[str, Any]) -> RunSpec:
    """The spec a FiftyOne operator builds from its params (the App's form, a delegated run, ``op(dataset, ...)``)."""
    from gsam2.operators.params import spec_from_params

    return spec_from_params(dict(settings))


def grounded_sam2_model(settings: dict[str, Any]) -> RunSpec:
    """The spec ``GroundedSam2Model(**kwargs)`` (``apply_model``, the zoo) runs; models are not loaded here."""
    from unittest import mock

    from gsam2.operators.fiftyone_model import GroundedSam2Model

    class UnloadedRun:  # the spec is what is compared: loading weights is another test's business
        def __init__(self, spec):
            self.spec = spec

        def load_for_images(self):
            return self

        load_for_video = load_for_images

        def phrases(self, prompt=None):
            return []

        detector = type("PromptFree", (), {"requires_prompt": False})()  # so the model asks for no classes

    video = any(name in settings for name in _TRACKING)
    with mock.patch("gsam2.operators.fiftyone_model.Run", UnloadedRun):
        return GroundedSam2Model(media_type="video" if video else "image", **settings).spec


def keyword_arguments(settings: dict[str, Any]) -> RunSpec:
    """The spec from Python keyword arguments (``gsam2.core``)."""
    return RunSpec.build(**settings)


ENTRY_POINTS: dict[str, Callable[[dict[str, Any]], RunSpec]] = {
    "gsam2 image": cli(["image", "--input", "in", "--output", "out"]),
    "gsam2 autolabel": cli(["autolabel", "--input", "in", "--output", "out"]),
    "gsam2 video": cli(["video", "--input", "in.mp4", "--output", "out"]),
    "gsam2 cvat annotate": cli(["cvat", "annotate", "--task", "1"]),
    "gsam2 cvat track": cli(["cvat", "track", "--task", "1"]),
    "CVAT function environment": environment,
    "CVAT function generator": generated_function,
    "cvat-sdk create(**params)": cvat_sdk_parameters,
    "FiftyOne operator params": operator_params,
    "GroundedSam2Model kwargs": grounded_sam2_model,
    "keyword arguments": keyword_arguments,
}

_TRACKING = ("tracker", "step", "iou_threshold", "prompt_type", "reverse", "end_after")
#: ``(entry point, setting) -> why it cannot be expressed there``.
NOT_EXPRESSED: dict[tuple[str, str], str] = {
    **{("gsam2 image", name): "an image run does not track" for name in _TRACKING},
    ("gsam2 image", "caption_task"): "captions are gsam2 autolabel's",
    **{("gsam2 autolabel", name): "an auto-labelling run does not track" for name in _TRACKING},
    ("gsam2 autolabel", "prompt"): "Florence-2's caption is the prompt",
    ("gsam2 autolabel", "task"): "auto-labelling fixes Florence-2's task (phrase grounding)",
    ("gsam2 autolabel", "slice_size"): "captions are written for whole images",
    ("gsam2 autolabel", "slice_overlap"): "captions are written for whole images",
    ("gsam2 autolabel", "box_threshold"): "Florence-2 gives no scores",
    ("gsam2 autolabel", "text_threshold"): "Florence-2 gives no scores",
    ("gsam2 video", "batch_size"): "a video is tracked one frame at a time",
    ("gsam2 video", "compile"): "compiling is offered for image runs (bench/README.md)",
    ("gsam2 video", "caption_task"): "captions are gsam2 autolabel's",
    ("gsam2 cvat annotate", "batch_size"): "frames come one chunk at a time from CVAT",
    ("gsam2 cvat annotate", "compile"): "compiling is offered for image runs on files",
    ("gsam2 cvat annotate", "caption_task"): "captions are gsam2 autolabel's",
    **{("gsam2 cvat annotate", name): "annotate labels shapes frame by frame" for name in _TRACKING},
    ("gsam2 cvat track", "batch_size"): "a video is tracked one frame at a time",
    ("gsam2 cvat track", "compile"): "compiling is offered for image runs on files",
    ("gsam2 cvat track", "caption_task"): "captions are gsam2 autolabel's",
    ("CVAT function generator", "device"): "the function's CPU or GPU flavour sets the device",
    ("FiftyOne operator params", "compile"): "operators run in FiftyOne's process, where a compiled model, cached "
    "and shared, would change every later run",
    ("GroundedSam2Model kwargs", "prompt"): "classes or a prompt field are per call (a sample's classes), beside the spec",
    ("GroundedSam2Model kwargs", "tracker"): "covered with a video below; SAM 3 as a video tracker takes no detector",
}


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_one_intent_gives_one_spec_from_every_entry_point(entry_point, setting, capsys):
    settings = {**BASE, setting: VALUES[setting]}
    if setting == "slice_overlap":
        settings["slice_size"] = VALUES["slice_size"]  # an overlap is only kept with tiles
    if setting == "task":
        settings["detector"] = "florence2"  # a task is Florence-2's (the operators read it only then)
    if (entry_point, "prompt") in NOT_EXPRESSED and setting != "prompt":
        del settings["prompt"]
    if (entry_point, setting) in NOT_EXPRESSED:  # listed with its reason
        if entry_point.startswith("gsam2 "):  # and the command really refuses it
            with pytest.raises(SystemExit):
                ENTRY_POINTS[entry_point](settings)
            assert "unrecognized arguments" in capsys.readouterr().err
        return
    expected = RunSpec.build(**{**OWN_DEFAULTS.get(entry_point, {}), **settings})
    assert ENTRY_POINTS[entry_point](settings) == expected


def test_every_reason_names_a_real_setting_and_entry_point():
    for entry_point, setting in NOT_EXPRESSED:
        assert entry_point in ENTRY_POINTS and setting in SETTINGS, (entry_point, setting)
    assert set(VALUES) == set(SETTINGS), "every setting has a value to test"
