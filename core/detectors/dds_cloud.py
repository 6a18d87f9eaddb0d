"""DINO-X and Grounding DINO 1.5 / 1.6 through the DeepDataSpace cloud API (``dds-cloudapi-sdk``).

The models run on DeepDataSpace's servers; this backend sends each image (from
memory, as a base64 data URI) to the SDK's V2 task API and turns the returned
boxes into detections labelled with the prompt's phrases. Boxes only: SAM 2
segments them like any other detector's.

The SDK is an optional extra (``pip install "gsam2[cloud]"``) and is imported
only when a detector is built, so ``import gsam2`` never needs it.

The API token comes from the caller (the FiftyOne operator passes the
``DDS_API_TOKEN`` secret) or from the ``DDS_API_TOKEN`` environment variable.
It never appears in a message, a log line or a repr of this module: every text
that comes back from the server or the SDK is scrubbed before it is shown.

The SDK's own ``Client.run_task`` is not used: it retries only a fixed 3 times
with fixed sleeps, polls forever, cannot tell a rate limit from a bad token,
and tags the SDK's Sentry events with the API token. Instead each task is
triggered and polled through ``Client.trigger_task`` / ``Client.check_task``
with our own retries, backoff and deadline.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv
from PIL import Image

from ..detections import empty_detections, make_detections
from ..errors import GroundedSam2Error, InputError, ModelLoadError, PromptError

logger = logging.getLogger(__name__)

TOKEN_ENV = "DDS_API_TOKEN"
DEFAULT_MODEL = "DINO-X-1.0"

#: V2 task paths by model family. The SDK's README and DeepDataSpace's demos use
#: these two; each takes the same body (model, image, prompt, targets, thresholds).
DINOX_PATH = "/v2/task/dinox/detection"
GROUNDING_DINO_PATH = "/v2/task/grounding_dino/detection"
KNOWN_MODELS = {
    "DINO-X-1.0": DINOX_PATH,
    "GroundingDino-1.5-Pro": GROUNDING_DINO_PATH,
    "GroundingDino-1.6-Pro": GROUNDING_DINO_PATH,
    "GroundingDino-1.5-Edge": GROUNDING_DINO_PATH,
    "GroundingDino-1.6-Edge": GROUNDING_DINO_PATH,
}
#: Newer model versions of a known family go to that family's path.
_FAMILY_PREFIXES = (("dino-x-", DINOX_PATH), ("groundingdino-", GROUNDING_DINO_PATH))

#: The SDK resizes local images to at most this many pixels on the long side
#: before sending them (``ResizeHelper.image_max_size``); so do we.
DEFAULT_MAX_IMAGE_SIZE = 1536
#: The NMS IoU the SDK's README and DeepDataSpace's demos send.
DEFAULT_IOU_THRESHOLD = 0.8

#: ``code`` the API answers with when the caller should try again (``ErrCode.Retry`` in the SDK).
RETRY_CODE = 202001
_SDK_SENTRY_HOST = "sentry.cvrgo.com"
_NO_PHRASE = -1
_BAD_TOKEN = re.compile(
    r"token.*(invalid|illegal|not exist|not found|expired|unauthori[sz]ed|wrong|incorrect)|"
    r"(invalid|illegal|wrong|incorrect|expired|unknown).*token|unauthori[sz]ed",
    re.IGNORECASE,
)


class CloudApiError(GroundedSam2Error, RuntimeError):
    """The cloud API could not be reached, refused the request, or the task failed."""


class CloudAuthError(CloudApiError):
    """The cloud API rejected the API token (never retried)."""


def resolve_token(token: str | None) -> str:
    """The API token to use: ``token`` if given, else the ``DDS_API_TOKEN`` environment variable.

    Raises:
        ModelLoadError: if neither holds a token. The message names the
            variable, never a value.
    """
    import os

    for candidate in (token, os.environ.get(TOKEN_ENV)):
        if candidate is not None and candidate.strip():
            return candidate.strip()
    raise ModelLoadError(
        f"the DeepDataSpace cloud detectors need an API token: set the {TOKEN_ENV} environment variable "
        f"(or the {TOKEN_ENV} secret in FiftyOne); get one at https://cloud.deepdataspace.com"
    )


def api_path_for(model: str) -> tuple[str, str]:
    """``(canonical model name, V2 task path)`` for a model name, matched case-insensitively.

    Raises:
        InputError: for a name that belongs to no known model family.
    """
    name = model.strip()
    for known, path in KNOWN_MODELS.items():
        if name.lower() == known.lower():
            return known, path
    for prefix, path in _FAMILY_PREFIXES:
        if name.lower().startswith(prefix):
            return name, path
    raise InputError(f"cloud model {model!r} is unknown; choose one of {', '.join(KNOWN_MODELS)}")


def _normalise(text: str) -> str:
    return " ".join(str(text).strip().strip(".").split()).lower()


def phrase_index(category: str, phrases: Sequence[str]) -> int:
    """Index of the phrase the API's ``category`` names (case and spacing ignored), or ``-1``."""
    key = _normalise(category)
    for index, phrase in enumerate(phrases):
        if _normalise(phrase) == key:
            return index
    return _NO_PHRASE


def encode_image(image: np.ndarray, max_size: int, image_format: str) -> tuple[bytes, float, float]:
    """The image as PNG/JPEG bytes, shrunk so its long side is at most ``max_size``.

    Returns ``(bytes, x_scale, y_scale)``: sent size over original size, to map
    the returned boxes back to the original pixels.
    """
    picture = Image.fromarray(np.ascontiguousarray(image))
    width, height = picture.size
    ratio = min(max_size / max(width, height), 1.0)
    if ratio < 1.0:
        size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if image_format == "jpeg":
        picture.save(buffer, format="JPEG", quality=95)
    else:
        picture.save(buffer, format="PNG")
    return buffer.getvalue(), picture.size[0] / width, picture.size[1] / height


def objects_to_detections(
    objects: Sequence[dict],
    phrases: Sequence[str],
    image_size: tuple[int, int],
    scale: tuple[float, float],
    box_threshold: float,
) -> sv.Detections:
    """The API's ``objects`` (``bbox`` as pixel ``xyxy`` of the sent image, ``score``, ``category``) as detections.

    Boxes are scaled back to the original image and clipped to it; objects
    under ``box_threshold`` or whose category is none of ``phrases`` are dropped.
    """
    height, width = image_size
    x_scale, y_scale = scale
    boxes, scores, class_ids, unknown = [], [], [], set()
    for item in objects:
        bbox, score = item.get("bbox"), float(item.get("score", 0.0))
        if bbox is None or len(bbox) != 4 or score < box_threshold:
            continue
        index = phrase_index(item.get("category", ""), phrases)
        if index == _NO_PHRASE:
            unknown.add(str(item.get("category")))
            continue
        boxes.append(bbox)
        scores.append(score)
        class_ids.append(index)
    if unknown:
        logger.warning("cloud API returned categories that are not in the prompt, dropped: %s", sorted(unknown))
    if not boxes:
        return empty_detections(height, width, with_masks=False)
    xyxy = np.asarray(boxes, dtype=np.float32) / np.array([x_scale, y_scale, x_scale, y_scale], dtype=np.float32)
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
    scores_array = np.asarray(scores, dtype=np.float32)
    order = np.argsort(-scores_array, kind="stable")
    return make_detections(xyxy[order], scores_array[order], np.asarray(class_ids)[order], phrases)


# -- the SDK --------------------------------------------------------------------------------------


@dataclass
class _Sdk:
    Client: type
    Config: type
    V2Task: type
    image_to_base64: Callable[[bytes], str]
    requests: Any


@dataclass
class _Response:
    """What the last HTTP answer in this thread said (the SDK drops the status code)."""

    status: int
    code: Any = None
    message: str | None = None


@dataclass
class _Failure:
    reason: str
    retryable: bool
    token_rejected: bool = False


_sdk: _Sdk | None = None
_sdk_lock = threading.Lock()
_last_response = threading.local()


def _remember_response(response, *args, **kwargs):
    # A requests hook on the SDK's session: it sees every answer before the SDK
    # parses it, so a failure can be classified by HTTP status and API code.
    code = message = None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        code, message = payload.get("code"), payload.get("msg")
    _last_response.info = _Response(response.status_code, code, None if message is None else str(message))
    return response


def _silence_sdk_telemetry() -> None:
    """Switch off the Sentry client that importing the SDK starts.

    ``dds_cloudapi_sdk.tasks.base`` calls ``sentry_sdk.init`` with its vendor's
    DSN, ``send_default_pii=True`` and the default integrations, which report
    every error log and uncaught exception of the whole process (with local
    variables, so possibly the token) to the vendor. A Sentry client the
    application set up itself is left alone.
    """
    import sentry_sdk

    client = sentry_sdk.get_client()
    dsn = str((getattr(client, "options", None) or {}).get("dsn") or "")
    if client.is_active() and _SDK_SENTRY_HOST in dsn:
        sentry_sdk.get_global_scope().set_client(None)
        client.close(timeout=0)


def _load_sdk() -> _Sdk:
    """Import ``dds-cloudapi-sdk`` once, or say which extra to install."""
    global _sdk
    with _sdk_lock:
        if _sdk is None:
            try:
                import requests
                from dds_cloudapi_sdk import Client, Config
                from dds_cloudapi_sdk.image_resizer import image_to_base64
                from dds_cloudapi_sdk.tasks import base as sdk_base
                from dds_cloudapi_sdk.tasks.v2_task import V2Task
            except ImportError as error:
                missing = f" (missing module {error.name!r})" if error.name else ""
                raise ModelLoadError(
                    f'the cloud detectors need dds-cloudapi-sdk: pip install "gsam2[cloud]"{missing}'
                ) from None
            _silence_sdk_telemetry()
            hooks = sdk_base.http_session.hooks["response"]
            if _remember_response not in hooks:
                hooks.append(_remember_response)
            _sdk = _Sdk(Client, Config, V2Task, image_to_base64, requests)
        return _sdk


# -- the detector ---------------------------------------------------------------------------------


def _pause(seconds: float) -> None:
    """Pause between polls and retries; tests replace this one name (not ``time.sleep``,
    which every other thread in the process shares) to record the backoff."""
    time.sleep(seconds)


class DdsCloudDetector:
    """Text-prompted detection with DINO-X or Grounding DINO 1.5 / 1.6 on DeepDataSpace's cloud API.

    Args:
        model: ``"DINO-X-1.0"`` (default), ``"GroundingDino-1.5-Pro"``, ``"GroundingDino-1.6-Pro"``, ...
        api_token: the API token; ``None`` reads ``DDS_API_TOKEN``.
        endpoint: the API host (``"api.deepdataspace.com"``) or a full ``http(s)://host:port`` URL;
            ``None`` keeps the SDK's choice (``DDS_CLOUDAPI_ENDPOINT`` or the production host).
        iou_threshold: the API's NMS IoU threshold.
        max_attempts: tries per HTTP request when the network fails, times out, or the API
            answers 429 / 5xx; waits ``retry_base_delay * 2**n`` seconds (at most
            ``retry_max_delay``) between tries.
        request_timeout: seconds to wait for one HTTP answer.
        task_timeout: seconds to wait for the server to finish the images of one ``detect`` call.
        poll_interval: seconds between task status checks.
        max_image_size: images are shrunk so their long side is at most this before sending.
        image_format: ``"jpeg"`` (small uploads, default) or ``"png"`` (lossless).

    Raises:
        ModelLoadError: no token, or the SDK is not installed.
        InputError: unknown model or option value.
    """

    name = "dds-cloud"
    requires_prompt = True
    produces_masks = False

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        api_token: str | None = None,
        *,
        endpoint: str | None = None,
        iou_threshold: float = DEFAULT_IOU_THRESHOLD,
        max_attempts: int = 4,
        retry_base_delay: float = 1.0,
        retry_max_delay: float = 30.0,
        request_timeout: float = 30.0,
        task_timeout: float = 300.0,
        poll_interval: float = 0.5,
        max_image_size: int = DEFAULT_MAX_IMAGE_SIZE,
        image_format: str = "jpeg",
    ):
        self.model, self.api_path = api_path_for(model)
        if image_format not in ("jpeg", "png"):
            raise InputError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
        if max_attempts < 1:
            raise InputError(f"max_attempts must be at least 1, got {max_attempts}")
        token = resolve_token(api_token)
        self._sdk = _load_sdk()
        # The SDK's Config reads DDS_CLOUDAPI_ENDPOINT; its endpoint is a plain
        # attribute, and V2Task uses it as is when it starts with "http".
        self._config = self._sdk.Config(token)
        if endpoint:
            self._config.endpoint = endpoint.rstrip("/")
        self._client = self._sdk.Client(self._config)
        self.iou_threshold = float(iou_threshold)
        self.max_attempts = int(max_attempts)
        self.retry_base_delay = float(retry_base_delay)
        self.retry_max_delay = float(retry_max_delay)
        self.request_timeout = float(request_timeout)
        self.task_timeout = float(task_timeout)
        self.poll_interval = float(poll_interval)
        self.max_image_size = int(max_image_size)
        self.image_format = image_format

    @property
    def endpoint(self) -> str:
        return self._config.endpoint

    def __repr__(self) -> str:
        return f"DdsCloudDetector(model={self.model!r}, endpoint={self.endpoint!r}, api_token='***')"

    # -- protocol ---------------------------------------------------------------------------------

    def validate_phrases(self, phrases: Sequence[str]) -> None:
        if not any(_normalise(phrase) for phrase in phrases):
            raise PromptError(f"{self.model} needs at least one class name in the prompt")
        for phrase in phrases:
            if "." in phrase.strip().strip("."):
                raise PromptError(f"class name {phrase!r} contains a period, which separates classes in the prompt")

    def detect(
        self,
        images: Sequence[np.ndarray],
        phrases: Sequence[str],
        box_threshold: float = 0.25,
        text_threshold: float = 0.25,
    ) -> list[sv.Detections]:
        """Detect ``phrases`` in RGB ``uint8`` images, one cloud task per image.

        ``box_threshold`` is sent as the API's ``bbox_threshold`` and applied
        again locally. ``text_threshold`` is unused: the API has no text
        threshold (its ``iou_threshold`` is the NMS IoU, set in the constructor).

        Raises:
            CloudAuthError: the token was rejected.
            CloudApiError: the API stayed unreachable, refused the request, or a task failed.
        """
        del text_threshold  # no counterpart in the API; see the docstring
        if not images:
            return []
        self.validate_phrases(phrases)
        phrases = list(phrases)
        # Trigger every image's task first, then poll them together, so the
        # server can work on a batch at once rather than one image after another.
        tasks, scales = [], []
        for image in images:
            task, scale = self._make_task(image, phrases, box_threshold)
            self._request("creating the detection task", lambda task=task: self._client.trigger_task(task))
            tasks.append(task)
            scales.append(scale)
        self._wait(tasks)
        return [
            objects_to_detections(
                (task.result or {}).get("objects") or [], phrases, image.shape[:2], scale, box_threshold
            )
            for task, scale, image in zip(tasks, scales, images)
        ]

    # -- helpers ----------------------------------------------------------------------------------

    def _make_task(self, image: np.ndarray, phrases: Sequence[str], box_threshold: float):
        data, x_scale, y_scale = encode_image(image, self.max_image_size, self.image_format)
        body = {
            "model": self.model,
            "image": self._sdk.image_to_base64(data),  # "data:image/jpeg;base64,..."
            # Phrases joined by periods, as in the SDK's README ("wolf.dog.butterfly").
            "prompt": {"type": "text", "text": ".".join(_normalise(phrase) for phrase in phrases)},
            "targets": ["bbox"],
            "bbox_threshold": float(box_threshold),
            "iou_threshold": self.iou_threshold,
        }
        task = self._sdk.V2Task(api_path=self.api_path, api_body=body)
        task.set_request_timeout(self.request_timeout)
        # One task object per image for all its retries: it keeps the SDK's
        # Idempotency-Key, so the server can tell a retried trigger from a new task.
        return task, (x_scale, y_scale)

    def _wait(self, tasks: list) -> None:
        deadline = time.monotonic() + self.task_timeout
        pending = list(tasks)
        while True:
            for task in pending:
                self._request("checking the task status", lambda task=task: self._client.check_task(task))
                if task.status is not None and task.status.value == "failed":
                    reason = self._clean(task.error) or "no reason given"
                    raise CloudApiError(f"{self.model}: the detection task failed: {reason}")
            pending = [task for task in pending if task.status is None or task.status.value != "success"]
            if not pending:
                return
            if time.monotonic() >= deadline:
                states = sorted({task.status.value for task in pending if task.status is not None})
                raise CloudApiError(
                    f"{self.model}: {len(pending)} detection task(s) did not finish within "
                    f"{self.task_timeout:g}s (still {', '.join(states) or 'pending'})"
                )
            _pause(self.poll_interval)

    def _request(self, action: str, send: Callable[[], Any]) -> None:
        """Run one SDK request, retrying failures a retry can fix, then raise a clean error."""
        failure = None
        for attempt in range(1, self.max_attempts + 1):
            failure = self._attempt(send)
            if failure is None:
                return
            if failure.token_rejected or not failure.retryable or attempt == self.max_attempts:
                break
            delay = min(self.retry_base_delay * 2 ** (attempt - 1), self.retry_max_delay)
            logger.warning(
                "%s: %s failed (%s); retry %d of %d in %.3gs",
                self.model,
                action,
                failure.reason,
                attempt,
                self.max_attempts - 1,
                delay,
            )
            _pause(delay)
        # Raised here, outside any except block, so no SDK or requests exception
        # (which carry the request and its Token header) rides along as __context__.
        if failure.token_rejected:
            raise CloudAuthError(
                f"{self.model}: the DDS API token was rejected ({failure.reason}); "
                f"check the {TOKEN_ENV} secret or environment variable"
            )
        tries = f" after {attempt} attempts" if attempt > 1 else ""
        raise CloudApiError(f"{self.model}: {action} failed{tries}: {failure.reason}")

    def _attempt(self, send: Callable[[], Any]) -> _Failure | None:
        requests = self._sdk.requests
        _last_response.info = None
        try:
            send()
            return None
        except requests.exceptions.Timeout:
            return _Failure(f"no answer from {self.endpoint} within {self.request_timeout:g}s", retryable=True)
        except requests.exceptions.ConnectionError:
            return _Failure(f"could not connect to {self.endpoint}", retryable=True)
        except Exception as error:  # noqa: BLE001 - the SDK raises RuntimeError, KeyError, ... for bad answers
            return self._classify(error, getattr(_last_response, "info", None))

    def _classify(self, error: Exception, response: _Response | None) -> _Failure:
        if response is None or (response.status < 400 and response.code in (None, 0)):
            # The server said yes but the SDK could not read the answer (an unknown status, a missing field).
            return _Failure(f"unexpected answer ({type(error).__name__}: {self._clean(str(error))})", retryable=False)
        message = self._clean(response.message)
        status = f"HTTP {response.status}"
        if response.code not in (None, 0, response.status):
            status += f", code {response.code}"
        reason = f"{status}: {message}" if response.message else status
        if response.status in (401, 403) or (response.message and _BAD_TOKEN.search(response.message)):
            return _Failure(reason, retryable=False, token_rejected=True)
        if response.status == 429 or response.code == RETRY_CODE:
            return _Failure(f"rate limited ({reason})", retryable=True)
        if response.status >= 500:
            return _Failure(f"server error ({reason})", retryable=True)
        return _Failure(reason, retryable=False)

    def _clean(self, text: Any) -> str:
        """``text`` on one short line with the token masked, for messages the user sees."""
        if text is None:
            return ""
        text = " ".join(str(text).split())
        token = self._config.token
        if token:
            text = text.replace(token, "***")
        return text if len(text) <= 300 else text[:297] + "..."
