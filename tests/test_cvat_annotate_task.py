"""End to end: ``cvat_sdk.auto_annotation.annotate_task`` runs ``gsam2.nuclio.sdk.detection``
on a task served by a local stand-in for the CVAT REST API (``tests/cvat_standin.py``).

cvat-sdk's own client code does everything a real ``cvat-cli task auto-annotate`` does:
the version check, token auth, fetching the task, its (paginated) labels, the data
metadata and the imageset chunks, mapping the function's labels to the task's by name,
and uploading the annotations (PUT with ``clear_existing``, PATCH ``action=create`` without).
The tests then check what arrived at the server against ``gsam2.core.ground_and_segment``.
"""

from __future__ import annotations

from collections import defaultdict

import cvat_sdk
import cvat_sdk.auto_annotation as cvataa
import numpy as np
import pytest
from cvat_sdk.masks import decode_mask
from gsam2.core import ground_and_segment, load_detector, load_segmenter
from gsam2.nuclio.sdk import detection as sdk_detection
from gsam2.nuclio.handlers.protocol import polygon_points

from .conftest import shapes_image
from .cvat_standin import CvatStandIn

TOKEN = "stand-in-token"
TASK_ID = 7
HEIGHT, WIDTH = 90, 120
IMAGES = [shapes_image(HEIGHT, WIDTH, seed) for seed in (1, 2, 3)]
CHUNK_SIZE = 2  # three frames in two chunks
LABELS = [{"id": 11, "name": "car"}, {"id": 12, "name": "red square"}, {"id": 13, "name": "person"}]
LABEL_IDS = {label["name"]: label["id"] for label in LABELS}
PHRASES = ["car", "red square"]
BOX_THRESHOLD = 0.5
EXISTING_SHAPE = {"type": "rectangle", "label_id": 13, "frame": 0, "points": [1.0, 2.0, 30.0, 40.0], "id": 999}

# What annotate_task is expected to ask for, with ids replaced by {id}.
READ_CALLS = {
    ("GET", "/api/server/about"),
    ("GET", "/api/tasks/{id}"),
    ("GET", "/api/labels"),
    ("GET", "/api/tasks/{id}/data/meta"),
    ("GET", "/api/tasks/{id}/data"),
}


@pytest.fixture(scope="module")
def function(tiny_models):
    return sdk_detection.create(
        prompt="car. red square.",
        detector=str(tiny_models["grounding-dino"]),
        segmenter=str(tiny_models["sam2"]),
        device="cpu",
        text_threshold=0.0,
        box_threshold=BOX_THRESHOLD,
    )


@pytest.fixture(scope="module")
def expected(tiny_models):
    """Per frame, what the core pipeline finds: ``[(label name, mask, xyxy), ...]`` in its order."""
    detector = load_detector(str(tiny_models["grounding-dino"]), device="cpu")
    segmenter = load_segmenter(str(tiny_models["sam2"]), device="cpu")
    per_frame = []
    for image in IMAGES:
        [detections] = ground_and_segment(
            [image], PHRASES, detector=detector, segmenter=segmenter, box_threshold=BOX_THRESHOLD, text_threshold=0.0
        )
        per_frame.append(
            [
                (str(detections.data["class_name"][i]), detections.mask[i], [float(v) for v in detections.xyxy[i]])
                for i in range(len(detections))
                if detections.confidence[i] >= BOX_THRESHOLD
            ]
        )
    assert any(per_frame), "the tiny models should detect something in these images"
    return per_frame


@pytest.fixture
def server():
    standin = CvatStandIn(TOKEN).start()
    standin.add_task(TASK_ID, IMAGES, LABELS, chunk_size=CHUNK_SIZE)
    yield standin
    standin.stop()


@pytest.fixture
def client(server, tmp_path):
    client = cvat_sdk.make_client(host="http://127.0.0.1", port=server.port, access_token=TOKEN)
    client.config.cache_dir = tmp_path / "cvat-cache"  # never the user's cache
    yield client
    client.close()


class RecordingFunction:
    """Delegates to a detection function, keeping the frames it was given."""

    def __init__(self, function):
        self.function, self.calls = function, []

    @property
    def spec(self):
        return self.function.spec

    def detect(self, context, image):
        self.calls.append((context.frame_name, np.asarray(image.convert("RGB"))))
        return self.function.detect(context, image)


def uploads(server):
    return [r for r in server.requests if r.path.endswith("/annotations")]


def check_reads(server):
    """The reads annotate_task made: the expected endpoints, authorized, both chunks, nothing unknown."""
    assert all(r.known for r in server.requests), [(r.method, r.path) for r in server.requests if not r.known]
    assert set(server.calls()) - {("PUT", "/api/tasks/{id}/annotations"), ("PATCH", "/api/tasks/{id}/annotations")} == (
        READ_CALLS
    )
    assert all(r.authorized for r in server.requests if r.path != "/api/server/about")
    assert all(r.query.get("task_id") == str(TASK_ID) for r in server.requests if r.path == "/api/labels")
    chunks = [r.query for r in server.requests if r.path == f"/api/tasks/{TASK_ID}/data"]
    assert sorted(int(q["number"]) for q in chunks) == [0, 1]
    assert all(q["type"] == "chunk" and q["quality"] == "original" for q in chunks)
    # the upload comes last, once
    assert server.requests[-1].path == f"/api/tasks/{TASK_ID}/annotations" and len(uploads(server)) == 1


def by_frame(shapes):
    frames = defaultdict(list)
    for shape in shapes:
        frames[shape["frame"]].append(shape)
    return frames


def test_masks_replace_the_task_annotations(server, client, function, expected):
    task = server.tasks[TASK_ID]
    task.annotations["shapes"].append(dict(EXISTING_SHAPE))
    recorder = RecordingFunction(function)

    cvataa.annotate_task(client, TASK_ID, recorder, clear_existing=True)

    check_reads(server)
    [upload] = uploads(server)
    assert upload.method == "PUT" and upload.query == {}

    # the function saw every frame, decoded from the chunks, in order
    assert [name for name, _ in recorder.calls] == [task.frame_name(i) for i in range(len(IMAGES))]
    for (_, seen), image in zip(recorder.calls, IMAGES):
        np.testing.assert_array_equal(seen, image)

    shapes = upload.body["shapes"]
    assert upload.body.get("tags", []) == [] and shapes
    # PUT replaced what was there
    assert all(s["id"] != EXISTING_SHAPE["id"] for s in task.annotations["shapes"])
    assert len(task.annotations["shapes"]) == len(shapes)

    frames = by_frame(shapes)
    assert set(frames) == {i for i, found in enumerate(expected) if found}
    assert set(frames) <= set(range(len(IMAGES)))
    assert {s["label_id"] for s in shapes} <= {LABEL_IDS[p] for p in PHRASES}
    for frame, found in enumerate(expected):
        uploaded = frames.get(frame, [])
        assert len(uploaded) == len(found)
        for shape, (name, mask, xyxy) in zip(uploaded, found):
            assert shape["label_id"] == LABEL_IDS[name] and shape["source"] == "auto"
            if mask.any():
                assert shape["type"] == "mask"
                np.testing.assert_array_equal(
                    decode_mask(shape["points"], image_width=WIDTH, image_height=HEIGHT), mask
                )
            else:  # the function falls back to the box when SAM 2 gives an empty mask
                assert shape["type"] == "rectangle" and shape["points"] == pytest.approx(xyxy)


def test_polygons_are_added_to_the_task_annotations(server, client, function, expected):
    task = server.tasks[TASK_ID]
    task.annotations["shapes"].append(dict(EXISTING_SHAPE))

    cvataa.annotate_task(client, TASK_ID, function, conv_mask_to_poly=True)

    check_reads(server)
    [upload] = uploads(server)
    assert upload.method == "PATCH" and upload.query == {"action": "create"}

    shapes = upload.body["shapes"]
    assert shapes and all(s["type"] in ("polygon", "rectangle") for s in shapes)
    assert any(s["type"] == "polygon" for s in shapes)
    # PATCH action=create kept what was there
    assert task.annotations["shapes"][0] == EXISTING_SHAPE
    assert len(task.annotations["shapes"]) == 1 + len(shapes)

    frames = by_frame(shapes)
    for frame, found in enumerate(expected):
        wanted = []
        for name, mask, xyxy in found:
            if not mask.any():
                wanted.append(("rectangle", LABEL_IDS[name], xyxy))
            elif len(points := polygon_points(mask)) >= 6:
                wanted.append(("polygon", LABEL_IDS[name], points))
        uploaded = frames.get(frame, [])
        assert [(s["type"], s["label_id"]) for s in uploaded] == [(kind, label) for kind, label, _ in wanted]
        for shape, (_, _, points) in zip(uploaded, wanted):
            assert shape["source"] == "auto" and shape["points"] == pytest.approx(points)
            xs, ys = shape["points"][0::2], shape["points"][1::2]
            assert 0 <= min(xs) and max(xs) <= WIDTH and 0 <= min(ys) and max(ys) <= HEIGHT
    assert set(frames) <= set(range(len(IMAGES)))


def test_a_label_missing_from_the_task_is_refused_before_anything_is_uploaded(server, client, function):
    server.add_task(TASK_ID + 1, IMAGES[:1], [{"id": 21, "name": "car"}])

    with pytest.raises(cvataa.BadFunctionError, match="red square"):
        cvataa.annotate_task(client, TASK_ID + 1, function)

    assert uploads(server) == []
    assert server.tasks[TASK_ID + 1].annotations["shapes"] == []
