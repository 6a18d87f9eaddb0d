"""Property-based: any JSON in any field of a CVAT request, and any prompt, gets a clear answer.

A parser either accepts the value or raises the project's own one-line error
(a 400 in a function); it never raises anything else (a 500), and the handlers
never put NaN or Infinity in an answer (not valid JSON).
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gsam2.core.errors import PromptError
from gsam2.core.prompts import parse_prompt
from gsam2.nuclio.handlers import detector, interactor, tracker
from gsam2.nuclio.handlers.protocol import RequestError
from gsam2.nuclio.handlers.tracker_state import ObjectState

from .conftest import shapes_image
from .nuclio_harness import invoke, make_context
from .test_cvat_conformance import b64

# Any JSON value, NaN and Infinity included (Python's json reads and writes them).
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
NUMBER = st.integers(-50, 200) | st.floats(-50, 200) | st.sampled_from([math.nan, math.inf, -math.inf])
POINT = st.lists(NUMBER, min_size=0, max_size=3) | JSON
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one_line(error: Exception) -> bool:
    return len(str(error).splitlines()) == 1 and str(error).strip() != ""


@FAST
@given(value=JSON)
def test_prompt_parsing_accepts_or_names_the_problem(value):
    try:
        phrases = parse_prompt(value)
    except PromptError as error:
        assert one_line(error)
    else:
        assert phrases and all(isinstance(p, str) and p == p.strip().lower() for p in phrases)


@FAST
@given(points=st.lists(POINT, max_size=4) | JSON, box=st.lists(POINT, max_size=3) | JSON, text=JSON)
def test_interactor_fields(points, box, text):
    body = {"pos_points": points, "obj_bbox": box, "text_prompts": text}
    try:
        parsed = interactor.parse_points(body, "pos_points", 120, 90)
        assert all(0 <= x <= 119 and 0 <= y <= 89 for x, y in parsed), "clamped into the image"
    except RequestError as error:
        assert one_line(error)
    try:
        parsed = interactor.parse_box(body, 120, 90)
        assert parsed is None or (parsed[0] < parsed[2] <= 120 and parsed[1] < parsed[3] <= 90)
    except RequestError as error:
        assert one_line(error)
    try:
        assert all(isinstance(phrase, str) and phrase for phrase in interactor.parse_text_prompts(body))
    except RequestError as error:
        assert one_line(error)


@FAST
@given(shapes=st.lists(st.none() | st.lists(NUMBER, max_size=7) | st.fixed_dictionaries(
    {"type": st.sampled_from(["rectangle", "polygon", "points", 3]), "points": st.lists(NUMBER, max_size=7)}) | JSON,
    max_size=4) | JSON, states=st.lists(JSON, max_size=4) | JSON)
def test_tracker_request_objects(shapes, states):
    try:
        objects = tracker.request_objects({"shapes": shapes, "states": states}, 120, 90)
    except RequestError as error:
        assert one_line(error)
    else:
        assert objects
        for item in objects:
            box = item.box
            assert all(math.isfinite(float(v)) for v in box) and box[0] < box[2] and box[1] < box[3]


@FAST
@given(state=JSON)
def test_tracker_state_reading_never_fails(state):
    assert ObjectState.from_json(state) is None or isinstance(ObjectState.from_json(state), ObjectState)


@FAST
@given(threshold=JSON)
def test_detector_threshold(threshold):
    try:
        value = detector.request_threshold({"threshold": threshold})
    except RequestError as error:
        assert one_line(error)
    else:
        assert 0 <= value <= 1


# ------------------------------------------------------------ whole handlers

@pytest.fixture(scope="module")
def contexts(tiny_models):
    import os

    saved = dict(os.environ)
    os.environ.update(GSAM2_SEGMENTER=str(tiny_models["sam2"]), GSAM2_TRACKER=str(tiny_models["sam2-video"]),
                      GSAM2_DETECTOR=str(tiny_models["grounding-dino"]), GSAM2_DEVICE="cpu")
    try:
        built = {}
        for module in (interactor, tracker):
            context = make_context()
            module.init_context(context)
            built[module.__name__.rsplit(".", 1)[1]] = context
        yield built
    finally:
        os.environ.clear()
        os.environ.update(saved)


IMAGE = b64(shapes_image(30, 40))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(st.sampled_from(["pos_points", "neg_points", "obj_bbox", "text_prompts", "image"]),
                              JSON, max_size=4))
def test_interactor_handler_answers_any_request(contexts, fields):
    status, body = invoke(interactor, contexts["interactor"], {"image": IMAGE, **fields})
    assert status in (200, 400, 422), body
    assert "NaN" not in json.dumps(body) and "Infinity" not in json.dumps(body)
    if status != 200:
        assert len(body["error"].splitlines()) == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(st.sampled_from(["shapes", "states", "image"]), JSON, max_size=3),
       shapes=st.lists(st.lists(NUMBER, min_size=4, max_size=4), min_size=1, max_size=2))
def test_tracker_handler_answers_any_request(contexts, fields, shapes):
    status, body = invoke(tracker, contexts["tracker"], {"image": IMAGE, "shapes": shapes, **fields})
    assert status in (200, 400), body
    text = json.dumps(body)
    assert "NaN" not in text and "Infinity" not in text
    if status != 200:
        assert len(body["error"].splitlines()) == 1
    else:
        assert len(body["shapes"]) == len(body["states"]) and None not in body["shapes"]
