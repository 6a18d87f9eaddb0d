"""A tiny stand-in for the CVAT REST endpoints that ``cvat_sdk.auto_annotation.annotate_task`` uses.

It serves image tasks (``data_original_chunk_type == "imageset"``), keeps each task's
annotations in memory and logs every request it receives, so that a test can drive
cvat-sdk's real client code against it and then look at what was uploaded:

    GET   /api/server/about                                     (no auth: the client asks before login)
    GET   /api/tasks/{id}
    GET   /api/labels?task_id={id}&page=N                       (paginated)
    GET   /api/tasks/{id}/data/meta
    GET   /api/tasks/{id}/data/?type=chunk&number=N&quality=original   (a zip of the chunk's images)
    PUT   /api/tasks/{id}/annotations/                          (replace the annotations)
    PATCH /api/tasks/{id}/annotations/?action=create            (add to them)

Everything but ``/api/server/about`` needs ``Authorization: Bearer <token>``.
Any other request gets a 404 and is logged with ``known=False``.
"""

from __future__ import annotations

import copy
import io
import json
import re
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

SERVER_VERSION = "2.80.0"  # the minor version that cvat-sdk 2.80 declares compatible
_DATE = "2024-01-01T00:00:00.000000Z"


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict[str, str]
    authorized: bool
    known: bool = True
    body: object = None


@dataclass
class StandInTask:
    id: int
    images: list[np.ndarray]
    labels: list[dict]
    chunk_size: int
    name: str = "task"
    annotations: dict = field(default_factory=lambda: {"version": 0, "tags": [], "shapes": [], "tracks": []})

    @property
    def size(self) -> int:
        return len(self.images)

    def frame_name(self, index: int) -> str:
        return f"frame_{index:06d}.png"

    def chunk_zip(self, number: int) -> bytes:
        start = number * self.chunk_size
        frames = range(start, min(start + self.chunk_size, self.size))
        if not frames:
            raise KeyError(number)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for index in frames:
                png = io.BytesIO()
                Image.fromarray(self.images[index]).save(png, format="PNG")
                archive.writestr(f"{index:06d}.png", png.getvalue())
        return buffer.getvalue()


class CvatStandIn:
    """``with CvatStandIn(token) as server: ...``; ``server.port``, ``server.requests``, ``server.tasks``."""

    def __init__(self, token: str = "stand-in-token"):
        self.token = token
        self.tasks: dict[int, StandInTask] = {}
        self.requests: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._next_id = 1
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="cvat-stand-in", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- state ---------------------------------------------------------------------------------

    def add_task(
        self, task_id: int, images: list[np.ndarray], labels: list[dict], *, chunk_size: int = 2
    ) -> StandInTask:
        task = StandInTask(task_id, [np.ascontiguousarray(image) for image in images], labels, chunk_size)
        self.tasks[task_id] = task
        return task

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def calls(self) -> list[tuple[str, str]]:
        """``(method, path)`` of each logged request, ids replaced by ``{id}`` and chunk numbers kept."""
        with self._lock:
            return [(r.method, re.sub(r"/\d+", "/{id}", r.path)) for r in self.requests]

    # -- JSON documents ------------------------------------------------------------------------

    def _about(self) -> dict:
        return {
            "name": "CVAT stand-in",
            "description": "A test stand-in for the CVAT REST API",
            "version": SERVER_VERSION,
            "logo_url": "",
            "subtitle": "",
        }

    def _user(self) -> dict:
        return {"url": f"{self.url}/api/users/1", "id": 1, "username": "admin", "first_name": "", "last_name": ""}

    def _task(self, task: StandInTask) -> dict:
        return {
            "url": f"{self.url}/api/tasks/{task.id}",
            "id": task.id,
            "name": task.name,
            "project_id": None,
            "project_name": None,
            "mode": "annotation",
            "owner": self._user(),
            "assignee": None,
            "bug_tracker": "",
            "created_date": _DATE,
            "updated_date": _DATE,
            "overlap": 0,
            "segment_size": task.size,
            "status": "annotation",
            "data_chunk_size": task.chunk_size,
            "data_compressed_chunk_type": "imageset",
            "data_original_chunk_type": "imageset",
            "guide_id": None,
            "data_cloud_storage_id": None,
            "size": task.size,
            "image_quality": 70,
            "data": task.id,
            "dimension": "2d",
            "subset": "",
            "organization": None,
            "organization_id": None,
            "target_storage": None,
            "source_storage": None,
            "jobs": {"count": 1, "completed": 0, "validation": 0, "url": f"{self.url}/api/jobs?task_id={task.id}"},
            "labels": {"url": f"{self.url}/api/labels?task_id={task.id}"},
            "assignee_updated_date": None,
            "validation_mode": None,
        }

    def _label(self, task: StandInTask, label: dict) -> dict:
        return {
            "color": "#33ddff",
            "attributes": [],
            "type": "any",
            "svg": "",
            "sublabels": [],
            "project_id": None,
            "task_id": task.id,
            "parent_id": None,
            "has_parent": False,
            **label,
        }

    def _meta(self, task: StandInTask) -> dict:
        return {
            "chunks_updated_date": _DATE,
            "chunk_size": task.chunk_size,
            "size": task.size,
            "image_quality": 70,
            "start_frame": 0,
            "stop_frame": task.size - 1,
            "frame_filter": "",
            "frames": [
                {
                    "name": task.frame_name(i),
                    "width": int(image.shape[1]),
                    "height": int(image.shape[0]),
                    "related_files": 0,
                    "has_related_context": False,
                }
                for i, image in enumerate(task.images)
            ],
            "deleted_frames": [],
            "included_frames": None,
            "storage": "local",
            "cloud_storage_id": None,
            "chapters": None,
        }

    def _store(self, task: StandInTask, body: dict, *, replace: bool) -> dict:
        with self._lock:
            if replace:
                task.annotations = {"version": 0, "tags": [], "shapes": [], "tracks": []}
            task.annotations["version"] += 1
            added = {"version": task.annotations["version"], "tags": [], "shapes": [], "tracks": []}
            for kind in ("tags", "shapes", "tracks"):
                for item in body.get(kind, []):
                    item = {**copy.deepcopy(item), "id": self._next_id}
                    self._next_id += 1
                    task.annotations[kind].append(item)
                    added[kind].append(item)
            return added

    # -- HTTP ------------------------------------------------------------------------------------

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output quiet
                pass

            def _reply(self, status: int, payload: bytes | dict | list, content_type: str = "application/json"):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str):
                parts = urlsplit(self.path)
                path = parts.path.rstrip("/") or "/"
                query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                authorized = self.headers.get("Authorization") == f"Bearer {server.token}"
                entry = LoggedRequest(method, path, query, authorized, body=body)
                with server._lock:
                    server.requests.append(entry)

                try:
                    if method == "GET" and path == "/api/server/about":
                        return self._reply(200, server._about())
                    route = self._route(method, path, query, body)
                except KeyError:
                    route = None
                if route is None:
                    entry.known = False
                    return self._reply(404, {"detail": "Not found."})
                if not authorized:
                    return self._reply(401, {"detail": "Authentication credentials were not provided."})
                return self._reply(*route)

            def _route(self, method, path, query, body):
                if method == "GET" and path == "/api/labels":
                    task = server.tasks[int(query["task_id"])]
                    page, page_size = int(query.get("page", 1)), 2  # small pages: exercises pagination
                    labels = task.labels[(page - 1) * page_size : page * page_size]
                    more = page * page_size < len(task.labels)
                    return 200, {
                        "count": len(task.labels),
                        "next": f"{server.url}/api/labels?task_id={task.id}&page={page + 1}" if more else None,
                        "previous": None,
                        "results": [server._label(task, label) for label in labels],
                    }
                match = re.fullmatch(r"/api/tasks/(\d+)(/.*)?", path)
                if not match:
                    return None
                task, rest = server.tasks[int(match.group(1))], match.group(2) or ""
                if method == "GET" and rest == "":
                    return 200, server._task(task)
                if method == "GET" and rest == "/data/meta":
                    return 200, server._meta(task)
                if method == "GET" and rest == "/data" and query.get("type") == "chunk":
                    return 200, task.chunk_zip(int(query["number"])), "application/zip"
                if rest == "/annotations" and method == "PUT":
                    return 200, server._store(task, body or {}, replace=True)
                if rest == "/annotations" and method == "PATCH" and query.get("action") == "create":
                    return 200, server._store(task, body or {}, replace=False)
                return None

            def do_GET(self):
                self._handle("GET")

            def do_PUT(self):
                self._handle("PUT")

            def do_PATCH(self):
                self._handle("PATCH")

            def do_POST(self):
                self._handle("POST")

            def do_DELETE(self):
                self._handle("DELETE")

        return Handler
