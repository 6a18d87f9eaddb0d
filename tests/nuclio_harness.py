"""Call our Nuclio handlers the way Nuclio's Python processor does, with nuclio_sdk's real objects.

The processor hands the wrapper a msgpack event message; the wrapper decodes it
with ``nuclio_sdk.Event.deserialize`` (a JSON body of content type
``application/json`` arrives as a parsed ``dict``, anything unparsable as the raw
bytes), calls ``handler(context, event)`` with a ``nuclio_sdk.Context``, and turns
what it returns into the HTTP answer with ``Response.from_entrypoint_output``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import msgpack
import nuclio_sdk
from nuclio_sdk.json_encoder import Encoder


class RecordingLogger:
    """A logger with the methods Nuclio's logger has, keeping what was logged."""

    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def _log(self, level: str, message: str, *args, **kwargs) -> None:
        self.lines.append((level, str(message)))

    def debug(self, message, *args, **kwargs):
        self._log("debug", message)

    def info(self, message, *args, **kwargs):
        self._log("info", message)

    def warn(self, message, *args, **kwargs):
        self._log("warn", message)

    def error(self, message, *args, **kwargs):
        self._log("error", message)

    debug_with = info_with = warn_with = error_with = debug


def make_context() -> nuclio_sdk.Context:
    context = nuclio_sdk.Context(logger=RecordingLogger(), worker_id=0)
    context.user_data = type("UserData", (), {})()  # Nuclio's own is a bare object to hang attributes on
    return context


def make_event(body: bytes, content_type: str = "application/json") -> nuclio_sdk.Event:
    """The event as the wrapper decodes the processor's msgpack message."""
    message = {
        "body": body,
        "content_type": content_type,
        "trigger": {"kind": "http", "name": "myHttpTrigger"},
        "fields": {},
        "headers": {"Content-Type": content_type},
        "id": "0",
        "method": "POST",
        "path": "/",
        "size": len(body),
        "timestamp": int(time.time()),
        "url": "http://function/",
        "shard_id": 0,
        "num_shards": 0,
        "type": "",
        "type_version": "",
        "version": "",
    }
    packed = msgpack.unpackb(msgpack.packb(message, use_bin_type=True), raw=False)
    return nuclio_sdk.Event.deserialize(packed, kind=nuclio_sdk.EventDeserializerKinds.msgpack)


def invoke(module, context, payload: Any) -> tuple[int, Any]:
    """``(status, decoded JSON body)`` of one call, as the processor would answer it."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    output = module.handler(context, make_event(body))
    response = nuclio_sdk.Response.from_entrypoint_output(Encoder().encode, output)
    assert response["content_type"] == "application/json"
    return response["status_code"], json.loads(response["body"])
