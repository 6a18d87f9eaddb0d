"""The DeepDataSpace cloud detector (DINO-X, Grounding DINO 1.5 / 1.6) against a local stand-in.

``dds-cloudapi-sdk``'s real client code (``Client.trigger_task`` / ``check_task``, ``V2Task``,
its ``requests`` session) talks HTTP to ``tests/dds_standin.py``, which speaks the SDK's wire
format; the tests look at what the server received and at what the detector made of the answers.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import subprocess
import sys
import time
import traceback

import numpy as np
import pytest
from gsam2.core.detectors import dds_cloud
from gsam2.core.detectors.base import Detector
from gsam2.core.detectors.dds_cloud import (
    CloudApiError,
    CloudAuthError,
    DdsCloudDetector,
    resolve_token,
)
from gsam2.core.errors import InputError, ModelLoadError, PromptError

from .conftest import shapes_image
from .dds_standin import DdsStandIn, decode_data_uri

# Distinctive, so that a leak anywhere is easy to find.
TOKEN = "ddsTOKEN-7f3a9c2e51b84d06a1e2f3c4b5d6e7f8"
WRONG_TOKEN = "ddsWRONG-0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f"
DINOX_PATH = "/v2/task/dinox/detection"
GDINO_PATH = "/v2/task/grounding_dino/detection"
STATUS = ("GET", "/v2/task_status/{uuid}")
HEIGHT, WIDTH = 120, 160

_SDK_READY = all(importlib.util.find_spec(name) for name in ("dds_cloudapi_sdk", "flask", "sentry_sdk"))
# Importing the SDK starts its Sentry client, which warns about its own options.
pytestmark = pytest.mark.filterwarnings("ignore:The send_default_pii option is deprecated:DeprecationWarning")
needs_sdk = pytest.mark.skipif(not _SDK_READY, reason='needs the cloud extra: pip install "gsam2[cloud]"')


@pytest.fixture
def server():
    with DdsStandIn(TOKEN) as stand_in:
        yield stand_in


@pytest.fixture(autouse=True)
def _no_token_in_environment(monkeypatch):
    # A developer's real token must neither leak into nor rescue a test.
    monkeypatch.delenv("DDS_API_TOKEN", raising=False)
    monkeypatch.delenv("DDS_CLOUDAPI_ENDPOINT", raising=False)


def make_detector(server: DdsStandIn, model: str = "DINO-X-1.0", **options) -> DdsCloudDetector:
    options = {
        "api_token": TOKEN,
        "endpoint": server.url,
        "retry_base_delay": 0.001,
        "poll_interval": 0.001,
        "request_timeout": 5.0,
        "task_timeout": 10.0,
        **options,
    }
    return DdsCloudDetector(model, **options)


def obj(category: str, score: float, x1: float, y1: float, x2: float, y2: float) -> dict:
    return {"category": category, "score": score, "bbox": [x1, y1, x2, y2]}


def posts(server: DdsStandIn) -> list:
    return [r for r in server.requests if r.method == "POST"]


# -- detection ------------------------------------------------------------------------------------


@needs_sdk
def test_detects_boxes_with_phrase_labels_and_sends_the_sdk_body(server):
    image = shapes_image(HEIGHT, WIDTH, seed=3)
    server.objects = [
        obj("dog", 0.6, 10, 20, 50, 60),
        obj("Cat", 0.9, 0.5, 1.5, 30, 40),  # the API's casing is not the prompt's
        obj(" red square. ", 0.7, 100, 50, 170, 130),  # reaches past the image: clipped
    ]
    detector = make_detector(server)

    [detections] = detector.detect([image], ["cat", "dog", "red square"], box_threshold=0.3, text_threshold=0.99)

    assert detections.class_id.tolist() == [0, 2, 1]  # sorted by score, indexing the phrases
    assert detections.data["class_name"].tolist() == ["cat", "red square", "dog"]
    np.testing.assert_allclose(detections.confidence, [0.9, 0.7, 0.6], rtol=1e-6)
    np.testing.assert_allclose(detections.xyxy, [[0.5, 1.5, 30, 40], [100, 50, 160, 120], [10, 20, 50, 60]])
    assert detections.mask is None  # boxes only: SAM 2 segments them
    # One task created, then polled until it succeeded (waiting, then success).
    assert server.calls() == [("POST", DINOX_PATH), STATUS, STATUS]
    [create] = posts(server)
    assert create.token_ok and create.content_type == "application/json"
    assert create.idempotency_key and len(create.idempotency_key) == 32
    body = dict(create.body)
    mime, sent = decode_data_uri(body.pop("image"))
    assert body == {
        "model": "DINO-X-1.0",
        "prompt": {"type": "text", "text": "cat.dog.red square"},
        "targets": ["bbox"],
        "bbox_threshold": 0.3,  # text_threshold has no counterpart in the API
        "iou_threshold": 0.8,
    }
    assert mime == "image/jpeg" and sent.shape == image.shape
    assert np.abs(sent.astype(int) - image.astype(int)).mean() < 3  # quality 95


@needs_sdk
def test_png_uploads_are_lossless(server):
    image = shapes_image(HEIGHT, WIDTH, seed=4)
    make_detector(server, image_format="png").detect([image], ["car"], 0.3, 0.25)
    mime, sent = decode_data_uri(posts(server)[0].body["image"])
    assert mime == "image/png"
    np.testing.assert_array_equal(sent, image)


@needs_sdk
@pytest.mark.parametrize(
    ("model", "canonical", "path"),
    [
        ("DINO-X-1.0", "DINO-X-1.0", DINOX_PATH),
        ("GroundingDino-1.5-Pro", "GroundingDino-1.5-Pro", GDINO_PATH),
        ("groundingdino-1.6-pro", "GroundingDino-1.6-Pro", GDINO_PATH),
    ],
)
def test_each_model_goes_to_its_api_path(server, model, canonical, path):
    server.objects = [obj("car", 0.8, 1, 2, 3, 4)]
    detector = make_detector(server, model)
    [detections] = detector.detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)
    assert detector.model == canonical
    assert posts(server)[0].path == path and posts(server)[0].body["model"] == canonical
    assert detections.data["class_name"].tolist() == ["car"]


def test_unknown_models_are_refused_before_anything_is_sent():
    with pytest.raises(InputError, match="DINO-X-1.0"):
        DdsCloudDetector("YOLO-World", api_token=TOKEN)


@needs_sdk
def test_no_objects_gives_empty_typed_detections(server):
    server.objects = []
    [detections] = make_detector(server).detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)
    assert len(detections) == 0
    assert detections.xyxy.shape == (0, 4) and detections.mask is None
    assert detections.class_id.shape == (0,) and detections.data["class_name"].tolist() == []


@needs_sdk
def test_low_scores_and_unknown_categories_are_dropped(server, caplog):
    server.objects = [obj("car", 0.29, 1, 1, 5, 5), obj("car", 0.3, 2, 2, 6, 6), obj("horse", 0.9, 3, 3, 7, 7)]
    with caplog.at_level(logging.WARNING, logger="gsam2"):
        [detections] = make_detector(server).detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)
    np.testing.assert_allclose(detections.xyxy, [[2, 2, 6, 6]])
    assert "horse" in caplog.text and "not in the prompt" in caplog.text


@needs_sdk
def test_large_images_are_shrunk_and_boxes_mapped_back(server):
    image = shapes_image(200, 400, seed=5)

    def objects(body, sent):  # a box in the sent image's pixels: its right half, bottom half
        height, width = sent.shape[:2]
        return [obj("car", 0.9, width / 2, height / 2, width, height)]

    server.objects = objects
    [detections] = make_detector(server, max_image_size=100).detect([image], ["car"], 0.3, 0.25)
    _, sent = decode_data_uri(posts(server)[0].body["image"])
    assert sent.shape[:2] == (50, 100)
    np.testing.assert_allclose(detections.xyxy, [[200, 100, 400, 200]])


@needs_sdk
def test_a_batch_runs_one_task_per_image_and_keeps_the_order(server):
    images = [shapes_image(80, 100, seed=1), shapes_image(60, 90, seed=2)]
    server.objects = lambda body, sent: [obj("car", 0.5, 0, 0, sent.shape[1], sent.shape[0])]
    server.polls_before_done = 2
    results = make_detector(server).detect(images, ["car"], 0.3, 0.25)
    np.testing.assert_allclose(results[0].xyxy, [[0, 0, 100, 80]])
    np.testing.assert_allclose(results[1].xyxy, [[0, 0, 90, 60]])
    # Both tasks are created before either is polled; each is polled until done.
    assert server.calls() == [("POST", DINOX_PATH)] * 2 + [STATUS] * 6
    assert len({r.idempotency_key for r in posts(server)}) == 2


@needs_sdk
def test_protocol_and_empty_input(server):
    detector = make_detector(server)
    assert isinstance(detector, Detector)
    assert (detector.name, detector.requires_prompt, detector.produces_masks) == ("dds-cloud", True, False)
    assert detector.detect([], ["car"], 0.3, 0.25) == []
    with pytest.raises(PromptError):
        detector.validate_phrases([])
    with pytest.raises(PromptError, match="period"):
        detector.validate_phrases(["a.b"])
    assert server.requests == []


# -- the token ------------------------------------------------------------------------------------


def test_resolve_token_prefers_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("DDS_API_TOKEN", " from-env ")
    assert resolve_token("explicit") == "explicit"
    assert resolve_token(None) == "from-env"
    assert resolve_token("  ") == "from-env"  # an empty FiftyOne secret falls back too
    monkeypatch.delenv("DDS_API_TOKEN")
    with pytest.raises(ModelLoadError, match="DDS_API_TOKEN"):
        resolve_token(None)


def test_a_missing_token_is_a_clear_load_error():
    with pytest.raises(ModelLoadError, match="set the DDS_API_TOKEN environment variable"):
        DdsCloudDetector("DINO-X-1.0")


@needs_sdk
def test_token_from_the_environment_and_from_the_argument(server, monkeypatch):
    monkeypatch.setenv("DDS_API_TOKEN", TOKEN)
    make_detector(server, api_token=None).detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)
    monkeypatch.setenv("DDS_API_TOKEN", WRONG_TOKEN)  # the argument wins over the environment
    make_detector(server, api_token=TOKEN).detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)
    assert [r.token_ok for r in server.requests] == [True] * len(server.requests)
    assert len(posts(server)) == 2


@needs_sdk
@pytest.mark.parametrize("rejection", ["http", "code"])
def test_a_rejected_token_fails_at_once_without_retries(server, rejection):
    server.token_rejection = rejection  # HTTP 401, or HTTP 200 with an "Invalid token" code
    detector = make_detector(server, api_token=WRONG_TOKEN, max_attempts=5)
    with pytest.raises(CloudAuthError, match="the DDS API token was rejected") as caught:
        detector.detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)
    assert "DINO-X-1.0" in str(caught.value) and "DDS_API_TOKEN" in str(caught.value)
    assert len(server.requests) == 1 and not server.requests[0].token_ok


# -- retries, timeouts, failures ------------------------------------------------------------------


@needs_sdk
@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("http429", "rate limited (HTTP 429"),
        ("retry_code", "rate limited (HTTP 200, code 202001"),
        ("http503", "server error (HTTP 503)"),
    ],
)
def test_rate_limits_and_server_errors_are_retried(server, caplog, fault, reason):
    server.objects = [obj("car", 0.8, 1, 2, 3, 4)]
    server.fail_next(fault, 2)
    with caplog.at_level(logging.WARNING, logger="gsam2"):
        [detections] = make_detector(server).detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)
    assert len(detections) == 1
    creates = posts(server)
    assert [r.fault for r in creates] == [fault, fault, None]
    # Every retry re-sends the same task: the server can tell it is one task, not three.
    assert len({r.idempotency_key for r in creates}) == 1 and len(server.tasks) == 1
    assert caplog.text.count(reason) == 2 and "retry 2 of 3" in caplog.text


@needs_sdk
def test_status_polls_are_retried_too(server):
    server.objects = [obj("car", 0.8, 1, 2, 3, 4)]
    server.fail_next("http503", 2, on="status")
    [detections] = make_detector(server).detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)
    assert len(detections) == 1
    assert server.calls() == [("POST", DINOX_PATH)] + [STATUS] * 4  # 2 x 503, waiting, success


@needs_sdk
def test_retries_back_off_exponentially_up_to_a_cap(server, monkeypatch):
    slept = []
    monkeypatch.setattr(dds_cloud, "_pause", slept.append)
    server.fail_next("http429", 4)
    detector = make_detector(server, retry_base_delay=0.5, retry_max_delay=1.5, max_attempts=5, poll_interval=0.01)
    detector.detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)
    assert slept == [0.5, 1.0, 1.5, 1.5, 0.01]  # four retries, then one poll interval


@needs_sdk
def test_retries_exhausted_give_a_clear_error(server):
    server.fail_next("http429", 10)
    with pytest.raises(CloudApiError) as caught:
        make_detector(server, max_attempts=3).detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)
    message = str(caught.value)
    assert not isinstance(caught.value, CloudAuthError)
    assert message.startswith("DINO-X-1.0: creating the detection task failed after 3 attempts: rate limited")
    assert "HTTP 429: Too Many Requests" in message
    assert len(posts(server)) == 3


@needs_sdk
def test_a_refused_request_is_not_retried(server):
    server.fail_next("quota", 5)  # "Token out of Quota": not a bad token, and retrying will not help
    with pytest.raises(CloudApiError, match="Token out of Quota") as caught:
        make_detector(server).detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)
    assert not isinstance(caught.value, CloudAuthError)
    assert len(posts(server)) == 1


@needs_sdk
def test_a_hanging_server_times_out_after_the_retries(server):
    server.fail_next("hang", 5)
    started = time.monotonic()
    with pytest.raises(CloudApiError, match=r"after 2 attempts: no answer from .* within 0.2s"):
        make_detector(server, request_timeout=0.2, max_attempts=2).detect(
            [shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25
        )
    assert time.monotonic() - started < server.hang_seconds
    assert len(posts(server)) == 2


@needs_sdk
def test_an_unreachable_endpoint_is_retried_then_reported():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    detector = DdsCloudDetector(
        "GroundingDino-1.6-Pro", api_token=TOKEN, endpoint=f"http://127.0.0.1:{port}", retry_base_delay=0.001
    )
    with pytest.raises(CloudApiError, match=r"GroundingDino-1.6-Pro: .* after 4 attempts: could not connect"):
        detector.detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)


@needs_sdk
def test_answers_the_sdk_cannot_read_are_reported_not_retried(server):
    detector = make_detector(server)
    error = ValueError("'pending' is not a valid TaskStatus")
    failure = detector._classify(error, dds_cloud._Response(status=200, code=0, message="ok"))
    assert not failure.retryable and not failure.token_rejected
    assert failure.reason == "unexpected answer (ValueError: 'pending' is not a valid TaskStatus)"


@needs_sdk
def test_a_failed_task_reports_the_api_message(server):
    server.fail_tasks_with = "image could not be decoded"
    with pytest.raises(CloudApiError, match="DINO-X-1.0: the detection task failed: image could not be decoded"):
        make_detector(server).detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)
    assert len(posts(server)) == 1  # a failed task is not re-run


@needs_sdk
def test_a_task_that_never_finishes_hits_the_deadline(server):
    server.never_finish = True
    with pytest.raises(CloudApiError, match=r"did not finish within 0.05s \(still running\)"):
        make_detector(server, task_timeout=0.05, poll_interval=0.01).detect(
            [shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25
        )


# -- the token never shows ------------------------------------------------------------------------


@needs_sdk
def test_the_token_never_appears_in_errors_logs_reprs_or_output(server, caplog, capsys):
    caplog.set_level(logging.DEBUG)  # everything: ours, the SDK's, urllib3's
    texts = []

    def failure_texts(error: BaseException) -> list[str]:
        assert error.__cause__ is None and error.__context__ is None  # no SDK exception rides along
        return [str(error), repr(error), "".join(traceback.format_exception(error))]

    detector = make_detector(server, max_attempts=2)
    texts += [repr(detector), str(detector)]
    server.objects = [obj("car", 0.8, 1, 2, 3, 4)]
    detector.detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)

    # Every way to fail, including a server message that echoes the token.
    scripts = [
        lambda: server.fail_next("http429", 2),
        lambda: server.fail_next("hang", 2),
        lambda: setattr(server, "fail_tasks_with", f"bad request from token {TOKEN}"),
    ]
    for script in scripts:
        script()
        with pytest.raises(CloudApiError) as caught:
            make_detector(server, max_attempts=2, request_timeout=0.2).detect(
                [shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25
            )
        texts += failure_texts(caught.value)
    assert "bad request from token ***" in texts[-3]

    wrong = make_detector(server, api_token=WRONG_TOKEN)
    texts += [repr(wrong)]
    with pytest.raises(CloudAuthError) as caught:
        wrong.detect([shapes_image(HEIGHT, WIDTH)], ["car"], 0.3, 0.25)
    texts += failure_texts(caught.value)

    captured = capsys.readouterr()
    texts += [caplog.text, captured.out, captured.err, repr(server.requests)]
    assert "retry 1 of 1" in caplog.text  # the logs did record the failures
    for text in texts:
        assert TOKEN not in text and WRONG_TOKEN not in text
    assert "api_token='***'" in repr(detector)


@needs_sdk
def test_the_sdks_own_sentry_reporting_is_switched_off(server):
    import sentry_sdk

    make_detector(server)
    client = sentry_sdk.get_client()
    assert not (client.is_active() and "sentry.cvrgo.com" in str(client.options.get("dsn")))


def test_an_application_sentry_client_is_left_alone(monkeypatch):
    sentry_sdk = pytest.importorskip("sentry_sdk")

    class AppClient:
        def __init__(self):
            self.options = {"dsn": "https://key@sentry.example.com/1"}
            self.closed = False

        def is_active(self):
            return True

        def close(self, timeout=None):
            self.closed = True

    app_client = AppClient()
    monkeypatch.setattr(sentry_sdk, "get_client", lambda: app_client)
    dds_cloud._silence_sdk_telemetry()
    assert not app_client.closed


# -- packaging and the registry -------------------------------------------------------------------


def test_a_missing_sdk_names_the_extra(monkeypatch):
    monkeypatch.setattr(dds_cloud, "_sdk", None)
    monkeypatch.setitem(sys.modules, "dds_cloudapi_sdk", None)  # import fails as if not installed
    with pytest.raises(ModelLoadError, match=r'pip install "gsam2\[cloud\]"'):
        DdsCloudDetector("DINO-X-1.0", api_token=TOKEN)


def test_importing_the_module_does_not_import_the_sdk():
    code = (
        "import sys, gsam2.core.detectors.dds_cloud; "
        "print(sorted(m for m in ('dds_cloudapi_sdk', 'sentry_sdk', 'flask') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


@needs_sdk
def test_load_detector_builds_it_by_alias_with_the_sdks_endpoint_variable(server, monkeypatch):
    from gsam2.core import load_detector

    monkeypatch.setenv("DDS_CLOUDAPI_ENDPOINT", server.url)  # the SDK's own override
    server.objects = [obj("person", 0.9, 5, 5, 20, 30)]
    detector = load_detector("grounding-dino-1.6-pro", api_token=TOKEN)
    assert isinstance(detector, DdsCloudDetector) and detector.model == "GroundingDino-1.6-Pro"
    [detections] = detector.detect([shapes_image(HEIGHT, WIDTH)], ["person"], 0.3, 0.25)
    assert detections.data["class_name"].tolist() == ["person"]
    assert posts(server)[0].path == GDINO_PATH
