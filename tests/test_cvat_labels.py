"""CVAT label names of every odd form are prompted and mapped back the same way, in each CVAT path.

A label is read as a phrase by ``core.prompts.label_phrase`` (case, repeated and
outer spaces, end periods, Unicode forms and invisible characters do not count):
the detector is prompted with the phrases the CLI would use, and what it names is
mapped back to the label as CVAT spells it. Deterministic fake detectors stand in
for the models.
"""

from __future__ import annotations

import base64
import io
import json

import cvat_sdk
import numpy as np
import pytest
import supervision as sv
import yaml
from PIL import Image

from gsam2.core import ground_and_segment, parse_prompt
from gsam2.core.errors import InputError
from gsam2.core.pipeline import detector_phrases
from gsam2.core.prompts import label_phrase
from gsam2.core.run import Run
from gsam2.core.spec import RunSpec
from gsam2.nuclio.generate import function_config
from gsam2.nuclio.handlers import detector
from gsam2.nuclio.rest import task_labeling
from gsam2.nuclio.rest.task_labeling import TaskLabel
from gsam2.nuclio.sdk import detection as sdk_detection

from .conftest import shapes_image
from .cvat_standin import CvatStandIn
from .nuclio_harness import invoke, make_context

IMAGE = shapes_image(90, 120)
HEIGHT, WIDTH = IMAGE.shape[:2]

# Each odd form of a label, and the phrase it stands for.
LABELS = {
    "Traffic  Light": "traffic light",  # repeated inner space
    "car.": "car",  # trailing period
    "Stop Sign...": "stop sign",
    "PERSON": "person",  # case
    "fire\thydrant": "fire hydrant",  # a tab
    "ｂｕｓ": "bus",  # full-width letters
    "parking\u00a0meter": "parking meter",  # a non-breaking space
    "te\u200bddy bear": "teddy bear",  # a zero-width space
    "Cafe\u0301 table": "café table",  # a combining accent
    "hot-dog!": "hot-dog!",  # inner and trailing punctuation other than periods is kept
    "u.s. flag": "u.s. flag",  # inner periods
    "Ölfass": "ölfass",
}
# What CVAT itself stores: it trims a label name's outer spaces (DRF CharField), so those come from the spec file.
SPEC_ONLY = {"  dog  ": "dog", " .cat. ": "cat"}


def test_label_phrase_of_every_form():
    for name, phrase in {**LABELS, **SPEC_ONLY}.items():
        assert label_phrase(name) == phrase, name
        assert label_phrase(phrase) == phrase, "a phrase reads as itself"
    ascii_names = [name for name in LABELS if name.isascii()]
    assert parse_prompt(ascii_names) == [label_phrase(name) for name in ascii_names], "as the CLI reads them"


class EchoMasksDetector:
    """Speaks the Detector interface of a mask-making backend: one object per phrase, named by ``name_of``.

    Prompted (``requires_prompt``), it finds every phrase it is given and names it
    with that phrase; prompt-free, it finds ``names`` and spells them its own way.
    """

    produces_masks = True

    def __init__(self, names: list[str] | None = None):
        self.names, self.calls = names, []
        self.requires_prompt = names is None
        self.name = "echo" if names is None else "prompt-free"

    def validate_phrases(self, phrases):
        pass

    def detect(self, images, phrases, box_threshold, text_threshold):
        self.calls.append(list(phrases))
        found = list(phrases) if self.names is None else self.names
        results = []
        for image in images:
            masks = np.zeros((len(found), *image.shape[:2]), bool)
            for i in range(len(found)):
                masks[i, (5 * i) % 80 : (5 * i) % 80 + 8, 4 * i : 4 * i + 6] = True
            detections = sv.Detections(xyxy=sv.mask_to_xyxy(masks).astype(np.float32), mask=masks,
                                       confidence=np.full(len(found), 0.9, np.float32),
                                       class_id=np.arange(len(found)))
            detections.data["class_name"] = np.array(found, dtype=object).astype(str)
            results.append(detections)
        return results


def b64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def detector_function(models_env, tmp_path, names: list[str]):
    """The Nuclio detector with a spec of these label names, exactly as written."""
    config = tmp_path / "function.yaml"
    spec = [{"id": i, "name": name, "type": "mask"} for i, name in enumerate(names)]
    config.write_text(yaml.safe_dump({"metadata": {"annotations": {"spec": json.dumps(spec)}}}))
    models_env.setenv("GSAM2_FUNCTION_CONFIG", str(config))
    context = make_context()
    detector.init_context(context)
    context.user_data.segmenter = None
    return context


def test_nuclio_detector_prompts_with_the_phrases_and_answers_with_the_spec_names(models_env, tmp_path):
    names = [*LABELS, *SPEC_ONLY]
    context = detector_function(models_env, tmp_path, names)
    fake = context.user_data.detector = EchoMasksDetector()  # prompted with the groups init_context made
    assert list(context.user_data.label_for_phrase) == [*LABELS.values(), *SPEC_ONLY.values()]
    status, items = invoke(detector, context, {"image": b64(IMAGE)})
    assert status == 200
    prompted = [phrase for group in fake.calls for phrase in group]
    assert prompted == [*LABELS.values(), *SPEC_ONLY.values()], "the prompt the CLI would give for these names"
    assert [item["label"] for item in items] == names, "every label comes back, spelled as in the spec"


def test_nuclio_detector_groups_are_built_from_the_phrases(models_env, tmp_path):
    context = detector_function(models_env, tmp_path, ["Traffic  Light", "car."])
    assert context.user_data.groups == [["traffic light", "car"]]


def test_nuclio_detector_maps_a_prompt_free_detectors_names_back(models_env, tmp_path):
    context = detector_function(models_env, tmp_path, ["Traffic  Light", "car.", "PERSON"])
    context.user_data.detector = EchoMasksDetector(["Traffic light", "CAR", "person.", "giraffe"])
    context.user_data.groups = [[]]
    status, items = invoke(detector, context, {"image": b64(IMAGE)})
    assert status == 200 and [item["label"] for item in items] == ["Traffic  Light", "car.", "PERSON"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["Car", "car."], "labels 'Car' and 'car.' both read as the phrase 'car'"),
        (["Traffic Light", "traffic  light"], "both read as the phrase 'traffic light'"),
        (["bus", "ｂｕｓ"], "both read as the phrase 'bus'"),
        (["car", "..."], "label '...' has no letter or digit"),
    ],
)
def test_labels_that_cannot_be_told_apart_are_refused(models_env, tmp_path, names, message):
    with pytest.raises(ValueError, match=message):
        function_config("grounded-sam2-detector", False, labels=names)
    with pytest.raises(ValueError, match=message):
        detector_function(models_env, tmp_path, names)


def test_sdk_detection_maps_a_prompt_free_detectors_names_back(tiny_models):
    from .test_cvat_sdk_functions import DetectionContext

    function = sdk_detection.create(prompt="Traffic  Light. car", detector=str(tiny_models["grounding-dino"]),
                                    segmenter=str(tiny_models["sam2"]), device="cpu")
    assert [label.name for label in function.spec.labels] == ["traffic light", "car"]
    function.detector, function.segmenter = EchoMasksDetector(["Traffic light", "CAR.", "giraffe"]), None
    function.groups = [[]]
    shapes = function.detect(DetectionContext(conf_threshold=0.5), Image.fromarray(IMAGE))
    assert [shape.label_id for shape in shapes] == [0, 1]
    unicode = sdk_detection.create(prompt="ｂｕｓ. Cafe\u0301", detector=str(tiny_models["grounding-dino"]),
                                   segmenter=str(tiny_models["sam2"]), device="cpu")
    assert [label.name for label in unicode.spec.labels] == ["bus", "café"]


# ---------------------------------------------------------------- gsam2 cvat annotate

TASK_ID = 5
TASK_LABELS = [{"id": 20 + i, "name": name, "type": "mask"} for i, name in enumerate(LABELS)]


@pytest.fixture
def task():
    standin = CvatStandIn("token").start()
    standin.add_task(TASK_ID, [IMAGE], TASK_LABELS, chunk_size=1)
    client = cvat_sdk.make_client(host="http://127.0.0.1", port=standin.port, access_token="token")
    yield standin, client.tasks.retrieve(TASK_ID)
    client.close()
    standin.stop()


def test_gsam2_cvat_annotate_labels_every_odd_label_form(task):
    """As ``gsam2 cvat annotate`` runs (cli.run_cvat): the task's labels are the prompt."""
    standin, cvat_task = task
    mapping = task_labeling.phrase_labels(task_labeling.task_labels(cvat_task), None, TASK_ID)
    fake = EchoMasksDetector()
    phrases = detector_phrases(fake, list(mapping))
    run = Run(RunSpec.build(prompt=list(mapping), box_threshold=0.3, device="cpu"), detector=fake, segmenter=None)

    summary = task_labeling.annotate_task(cvat_task, mapping, run)
    stored = standin.tasks[TASK_ID].annotations["shapes"]
    assert sorted(shape["label_id"] for shape in stored) == [label["id"] for label in TASK_LABELS]
    assert summary.objects == len(LABELS) and phrases == list(LABELS.values())


def test_gsam2_cvat_annotate_prompt_phrases_match_odd_label_names():
    labels = [TaskLabel(20 + i, name, "mask") for i, name in enumerate(LABELS)]
    mapping = task_labeling.phrase_labels(labels, "traffic light. Car. BUS", TASK_ID)
    assert {phrase: label.name for phrase, label in mapping.items()} == {
        "traffic light": "Traffic  Light", "car": "car.", "bus": "ｂｕｓ"}
    with pytest.raises(InputError, match="both read as 'car'"):
        task_labeling.phrase_labels([TaskLabel(1, "Car", "mask"), TaskLabel(2, "car.", "mask")], None, TASK_ID)
    with pytest.raises(InputError, match="'giraffe' matches no label"):
        task_labeling.phrase_labels(labels, "giraffe", TASK_ID)


class FailingOnDarkFrames(EchoMasksDetector):
    """Echoes its phrases, but a frame whose mean is below 60 is a failure of that frame alone."""

    def detect(self, images, phrases, box_threshold, text_threshold):
        if any(image.mean() < 60 for image in images):
            raise InputError("this frame cannot be labelled")
        return super().detect(images, phrases, box_threshold, text_threshold)


def test_gsam2_cvat_annotate_reports_a_failing_frame_and_labels_the_others():
    """annotate goes through the engine: batches of run.batch_size, and a frame that fails fails alone."""
    frames = [IMAGE, np.zeros_like(IMAGE), IMAGE, IMAGE]
    standin = CvatStandIn("token").start()
    try:
        standin.add_task(TASK_ID, frames, TASK_LABELS, chunk_size=2)
        client = cvat_sdk.make_client(host="http://127.0.0.1", port=standin.port, access_token="token")
        cvat_task = client.tasks.retrieve(TASK_ID)
        mapping = task_labeling.phrase_labels(task_labeling.task_labels(cvat_task), None, TASK_ID)
        spec = RunSpec.build(prompt=list(mapping), box_threshold=0.3, device="cpu", batch_size=2)
        run = Run(spec, detector=FailingOnDarkFrames(), segmenter=None)
        reported = []
        summary = task_labeling.annotate_task(cvat_task, mapping, run, on_failure=reported.append)
        client.close()
    finally:
        standin.stop()
    assert summary.failures == reported and len(reported) == 1
    assert reported[0].startswith("frame 1: ") and "cannot be labelled" in reported[0]
    assert summary.frames == 3 and summary.objects == 3 * len(LABELS)
    stored = standin.tasks[TASK_ID].annotations["shapes"]
    assert sorted({shape["frame"] for shape in stored}) == [0, 2, 3]


@pytest.mark.parametrize("tracker", ["sam3", "edgetam"])
def test_gsam2_cvat_track_with_sam3_and_edgetam(tiny_models, tracker):
    """``gsam2 cvat track --tracker sam3|edgetam`` (run.track): one CVAT track per object, uploaded to the task."""
    frames = [np.roll(IMAGE, 3 * k, axis=1) for k in range(4)]
    labels = [{"id": 30, "name": "car", "type": "polygon"}, {"id": 31, "name": "red square", "type": "rectangle"}]
    standin = CvatStandIn("token").start()
    try:
        standin.add_task(TASK_ID, frames, labels, chunk_size=2)
        client = cvat_sdk.make_client(host="http://127.0.0.1", port=standin.port, access_token="token")
        cvat_task = client.tasks.retrieve(TASK_ID)
        mapping = task_labeling.phrase_labels(task_labeling.task_labels(cvat_task), None, TASK_ID)
        if tracker == "sam3":
            settings = {"tracker": f"sam3:{tiny_models['sam3-video']}", "box_threshold": 0.0}
        else:
            settings = {"tracker": f"edgetam:{tiny_models['edgetam-video']}", "step": 2, "box_threshold": 0.0,
                        "text_threshold": 0.0, "detector": f"mm-grounding-dino:{tiny_models['mm-grounding-dino']}",
                        "segmenter": str(tiny_models["sam2"])}
        run = Run(RunSpec.build(prompt=list(mapping), device="cpu", **settings)).load_for_video()
        summary = task_labeling.track_task(cvat_task, mapping, run)
        client.close()
    finally:
        standin.stop()
    assert summary.frames == len(frames) and not summary.failures
    tracks = standin.tasks[TASK_ID].annotations["tracks"]
    assert len(tracks) == summary.objects > 0, "threshold 0: the tiny models find and follow something"
    for track in tracks:
        assert track["label_id"] in (30, 31) and track["source"] == "auto"


@pytest.mark.parametrize("command", [["annotate"], ["track", "--tracker", "edgetam:{edgetam}", "--step", "2"]])
def test_gsam2_cvat_command_against_the_standin(tiny_models, monkeypatch, capsys, command):
    """``gsam2 cvat annotate|track`` end to end (cli.run_cvat builds the Run) against the CVAT stand-in."""
    from gsam2 import cli

    frames = [np.roll(IMAGE, 3 * k, axis=1) for k in range(3)]
    labels = [{"id": 30, "name": "car", "type": "polygon"}, {"id": 31, "name": "red square", "type": "mask"}]
    standin = CvatStandIn("token").start()
    try:
        standin.add_task(TASK_ID, frames, labels, chunk_size=2)
        client = cvat_sdk.make_client(host="http://127.0.0.1", port=standin.port, access_token="token")
        monkeypatch.setattr(task_labeling, "connect", lambda: client)  # the stand-in has no users/self
        command = [part.format(edgetam=tiny_models["edgetam-video"]) for part in command]
        status = cli.main(["cvat", *command, "--task", str(TASK_ID), "--detector", str(tiny_models["grounding-dino"]),
                           "--segmenter", str(tiny_models["sam2"]), "--device", "cpu", "--quiet",
                           "--box-threshold", "0", "--text-threshold", "0"])
    finally:
        standin.stop()
    captured = capsys.readouterr()
    assert status == 0 and "frames processed: 3" in captured.out, captured.err
    stored = standin.tasks[TASK_ID].annotations["shapes" if command[0] == "annotate" else "tracks"]
    assert stored and {item["label_id"] for item in stored} <= {30, 31}
