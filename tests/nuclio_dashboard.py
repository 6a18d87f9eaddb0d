"""A Nuclio dashboard for the tests: hosts our real function handlers where CVAT looks for functions.

CVAT's lambda manager (cvat/apps/lambda_manager/views.py, ``LambdaGateway``, invoke method
``dashboard``) reads ``GET /api/functions`` (every deployed function's config: the
``function.yaml`` with a ``status`` saying it is ready) and ``GET /api/functions/<name>``,
and calls a function with ``POST /api/function_invocations``, the function named by the
``x-nuclio-function-name`` header and the request JSON as the body. Here each function's
body goes to our real ``handler`` through nuclio_sdk's Context and Event, as Nuclio's
processor would hand it (``init_context`` once per function, then ``handler`` per call),
and its response goes back with the status code the handler chose.

Only the dashboard is a stand-in: what CVAT sends and how it reads the answers is CVAT's.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import nuclio_sdk
from nuclio_sdk.json_encoder import Encoder

from .nuclio_harness import make_context, make_event


@dataclass
class HostedFunction:
    """One deployed function: its config as Nuclio reports it, its handler module and context."""

    config: dict[str, Any]
    module: Any
    context: Any = None
    calls: list[dict[str, Any]] = field(default_factory=list)  # every body CVAT sent, in order

    @property
    def name(self) -> str:
        return self.config["metadata"]["name"]

    def start(self) -> None:
        """What Nuclio does when a function (re)starts: a fresh context, ``init_context`` once."""
        self.context = make_context()
        self.module.init_context(self.context)

    def invoke(self, body: bytes) -> tuple[int, str]:
        self.calls.append(json.loads(body))
        output = self.module.handler(self.context, make_event(body))
        response = nuclio_sdk.Response.from_entrypoint_output(Encoder().encode, output)
        return response["status_code"], response["body"]


class NuclioDashboard:
    """``with NuclioDashboard(port, functions):`` serves the functions until the block ends."""

    def __init__(self, host: str, port: int, functions: list[HostedFunction]):
        self.functions = {function.name: function for function in functions}
        dashboard = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: pytest shows failures, not every request
                pass

            def _answer(self, status: int, body: str | dict | list) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server's naming
                path = self.path.split("?")[0].rstrip("/")
                if path == "/api/functions":
                    self._answer(200, {name: f.config for name, f in dashboard.functions.items()})
                elif path.startswith("/api/functions/") and path.split("/")[-1] in dashboard.functions:
                    self._answer(200, dashboard.functions[path.split("/")[-1]].config)
                else:
                    self._answer(404, {"error": f"no function at {path}"})

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                name = self.headers.get("x-nuclio-function-name")
                if self.path.rstrip("/") != "/api/function_invocations" or name not in dashboard.functions:
                    self._answer(404, {"error": f"no function {name!r}"})
                    return
                status, answer = dashboard.functions[name].invoke(body)
                self._answer(status, answer)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> NuclioDashboard:
        for function in self.functions.values():
            function.start()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def deployed(config: dict[str, Any]) -> dict[str, Any]:
    """A function.yaml as the dashboard reports a deployed, ready function."""
    return {**config, "status": {"state": "ready", "httpPort": 0}}
