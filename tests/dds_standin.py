"""A tiny stand-in for the DeepDataSpace cloud API's V2 tasks, as ``dds-cloudapi-sdk`` 0.5 speaks it.

The wire format, read from the SDK (``tasks/base.py``, ``tasks/v2_task.py``):

    POST /v2/task/dinox/detection            create a DINO-X task
    POST /v2/task/grounding_dino/detection   create a Grounding DINO 1.5 / 1.6 task
        headers: ``Token: <api token>``, ``Idempotency-Key: <hex>``, ``Content-Type: application/json``
        body:    ``{"model", "image": "data:image/...;base64,...", "prompt": {"type": "text", "text"},
                    "targets": ["bbox"], "bbox_threshold", "iou_threshold"}``
        answer:  ``{"code": 0, "msg": "ok", "data": {"task_uuid": "..."}}``
    GET  /v2/task_status/{task_uuid}
        headers: ``Token``
        answer:  ``{"code": 0, "msg": "ok", "data": {"uuid", "status", "result", "error"}}`` with
                 ``status`` one of ``waiting``, ``running``, ``success``, ``failed``; on success
                 ``result`` is ``{"objects": [{"bbox": [x1, y1, x2, y2], "score", "category"}]}``.

Errors answer ``{"code": <non-zero>, "msg": "...", "data": null}``. What the real API sends for a
bad token or a rate limit is not documented; this stand-in answers HTTP 401 for a wrong token
(``token_rejection="http"``) or HTTP 200 with a non-zero code and an "invalid token" message
(``token_rejection="code"``), and HTTP 429 for rate limits.

Every request is logged without its token: ``LoggedRequest.token_ok`` says whether it matched.
Scripted faults (``fail_next``) are used up one request at a time.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import numpy as np
from PIL import Image

CREATE_PATHS = ("/v2/task/dinox/detection", "/v2/task/grounding_dino/detection")
STATUS_PATH = re.compile(r"/v2/task_status/([0-9a-f-]+)")

#: Faults ``fail_next`` can script:
#: ``"http429"`` (JSON, rate limited), ``"http503"`` (HTML, like a gateway), ``"retry_code"``
#: (HTTP 200 with the API's "try again" code 202001), ``"hang"`` (no answer for ``hang_seconds``),
#: ``"quota"`` (HTTP 200, code 403001, "Token out of Quota": not retryable, not a bad token).
FAULTS = ("http429", "http503", "retry_code", "hang", "quota")


@dataclass
class LoggedRequest:
    method: str
    path: str
    token_ok: bool
    idempotency_key: str | None
    content_type: str | None
    body: Any = None
    fault: str | None = None


@dataclass
class StandInTask:
    uuid: str
    body: dict
    objects: list[dict]
    polls: int = 0


def decode_data_uri(uri: str) -> tuple[str, np.ndarray]:
    """``(mime type, RGB image)`` of a ``data:image/...;base64,...`` URI."""
    match = re.fullmatch(r"data:(image/[a-z]+);base64,(.+)", uri, flags=re.DOTALL)
    if not match:
        raise ValueError("not a base64 image data URI")
    picture = Image.open(io.BytesIO(base64.b64decode(match.group(2))))
    return match.group(1), np.asarray(picture.convert("RGB"))


class DdsStandIn:
    """``with DdsStandIn(token) as server: ...``; ``server.url``, ``server.requests``.

    Attributes tests set:
        objects: the detections every task returns, or a callable ``(body, image) -> objects``.
        polls_before_done: status checks that answer ``waiting`` / ``running`` before the final one.
        fail_tasks_with: a message: tasks end ``failed`` with it instead of ``success``.
        never_finish: tasks stay ``running`` for ever.
        hang_seconds: how long a ``"hang"`` fault keeps the client waiting.
        token_rejection: ``"http"`` (HTTP 401) or ``"code"`` (HTTP 200, non-zero code).
    """

    def __init__(self, token: str = "stand-in-dds-token"):
        self._token = token  # private: never logged, never part of a LoggedRequest
        self.objects: list[dict] | Callable[[dict, np.ndarray], list[dict]] = []
        self.polls_before_done = 1
        self.fail_tasks_with: str | None = None
        self.never_finish = False
        self.hang_seconds = 5.0
        self.token_rejection = "http"
        self.requests: list[LoggedRequest] = []
        self.tasks: dict[str, StandInTask] = {}
        self._faults: dict[str, deque[str]] = {"create": deque(), "status": deque()}
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="dds-stand-in", daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()  # end any hang now
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"DdsStandIn(url={self.url!r})"

    # -- scripting ---------------------------------------------------------------------------------

    def fail_next(self, fault: str, times: int = 1, *, on: str = "create") -> None:
        """Answer the next ``times`` requests of kind ``on`` (``"create"`` or ``"status"``) with ``fault``."""
        if fault not in FAULTS or on not in self._faults:
            raise ValueError(f"unknown fault {fault!r} on {on!r}")
        with self._lock:
            self._faults[on].extend([fault] * times)

    def calls(self) -> list[tuple[str, str]]:
        """``(method, path)`` of each logged request, task ids replaced by ``{uuid}``."""
        with self._lock:
            return [(r.method, STATUS_PATH.sub("/v2/task_status/{uuid}", r.path)) for r in self.requests]

    def created(self) -> list[LoggedRequest]:
        """The task-creation requests that were answered with a task."""
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.fault is None and r.token_ok]

    # -- behaviour ---------------------------------------------------------------------------------

    def _create(self, body: dict) -> tuple[int, dict]:
        problems = []
        if not isinstance(body.get("model"), str):
            problems.append("model is required")
        prompt = body.get("prompt") or {}
        if prompt.get("type") != "text" or not str(prompt.get("text", "")).strip():
            problems.append("prompt must be {'type': 'text', 'text': ...}")
        try:
            _, image = decode_data_uri(str(body.get("image", "")))
        except (ValueError, OSError):
            problems.append("image must be a base64 data URI of an image")
            image = None
        if problems:
            return 400, {"code": 400001, "msg": "; ".join(problems), "data": None}
        objects = self.objects(body, image) if callable(self.objects) else self.objects
        task = StandInTask(str(uuid.uuid4()), body, [dict(item) for item in objects])
        with self._lock:
            self.tasks[task.uuid] = task
        return 200, {"code": 0, "msg": "ok", "data": {"task_uuid": task.uuid}}

    def _status(self, task_uuid: str) -> tuple[int, dict]:
        with self._lock:
            task = self.tasks.get(task_uuid)
            if task is None:
                return 404, {"code": 404, "msg": "Resource Not Found", "data": None}
            task.polls += 1
            polls = task.polls
        data = {"uuid": task.uuid, "status": "running", "result": None, "error": None}
        if self.never_finish or polls <= self.polls_before_done:
            data["status"] = "waiting" if polls == 1 else "running"
        elif self.fail_tasks_with is not None:
            data.update(status="failed", error=self.fail_tasks_with)
        else:
            data.update(status="success", result={"objects": task.objects})
        return 200, {"code": 0, "msg": "ok", "data": data}

    def _fault_answer(self, fault: str) -> tuple[int, dict | bytes]:
        if fault == "http429":
            return 429, {"code": 429, "msg": "Too Many Requests", "data": None}
        if fault == "http503":
            return 503, b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
        if fault == "retry_code":
            return 200, {"code": 202001, "msg": "server busy, please retry", "data": None}
        if fault == "quota":
            return 200, {"code": 403001, "msg": "Token out of Quota", "data": None}
        self._released.wait(self.hang_seconds)  # "hang"
        return 503, {"code": 503, "msg": "hung", "data": None}

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind its gateway

            def log_message(self, *args):  # keep pytest output quiet
                pass

            def _reply(self, status: int, payload: bytes | dict) -> None:
                is_json = not isinstance(payload, bytes)
                data = json.dumps(payload).encode() if is_json else payload
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json" if is_json else "text/html")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a timeout test): nothing to answer

            def _handle(self, method: str) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                entry = LoggedRequest(
                    method,
                    path,
                    token_ok=self.headers.get("Token") == server._token,
                    idempotency_key=self.headers.get("Idempotency-Key"),
                    content_type=self.headers.get("Content-Type"),
                    body=body,
                )
                with server._lock:
                    server.requests.append(entry)
                status_match = STATUS_PATH.fullmatch(path)
                kind = "create" if method == "POST" and path in CREATE_PATHS else None
                kind = "status" if method == "GET" and status_match else kind
                if kind is None:
                    return self._reply(404, {"code": 404, "msg": "Resource Not Found", "data": None})
                if not entry.token_ok:
                    if server.token_rejection == "code":
                        return self._reply(200, {"code": 401001, "msg": "Invalid token", "data": None})
                    return self._reply(401, {"code": 401, "msg": "Invalid token", "data": None})
                with server._lock:
                    fault = server._faults[kind].popleft() if server._faults[kind] else None
                if fault is not None:
                    entry.fault = fault
                    return self._reply(*server._fault_answer(fault))
                if kind == "create":
                    return self._reply(*server._create(body if isinstance(body, dict) else {}))
                return self._reply(*server._status(status_match.group(1)))

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        return Handler
