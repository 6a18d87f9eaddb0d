"""Our Nuclio functions called by a real CVAT server (../shared/cvat-server, CVAT 2.73).

CVAT's own lambda manager builds every request and reads every answer; only the Nuclio
dashboard in front of our handlers is a stand-in (tests/nuclio_dashboard.py). Everything
is done through CVAT's REST API, as the UI and cvat-sdk do.

Needs the kit started (``cvat-server.sh start``) with CVAT_URL, CVAT_USER and CVAT_PASSWORD
set (``eval "$(cvat-server.sh env)"``); .ci/run does that and sets GSAM2_REQUIRE_CVAT=1, so
in CI these tests run or fail, never skip.
"""

from __future__ import annotations

import base64
import io
import os
import time

import numpy as np
import pytest
import requests
from PIL import Image

from gsam2.core import decode_image, ground_and_segment, load_detector, load_segmenter
from gsam2.nuclio.handlers import detector, interactor, tracker
from gsam2.nuclio.generate import function_config, write_function

from . import cvat_rules
from .conftest import shapes_image
from .media import moving_squares
from .nuclio_dashboard import HostedFunction, NuclioDashboard, deployed

LABELS = ["car", "person", "truck"]


def cvat_settings() -> tuple[str, tuple[str, str]] | None:
    url = os.environ.get("CVAT_URL")
    if not url:
        return None
    try:
        requests.get(f"{url}/api/server/about", timeout=5).raise_for_status()
    except requests.RequestException:
        return None
    return url, (os.environ.get("CVAT_USER", "admin"), os.environ.get("CVAT_PASSWORD", ""))


@pytest.fixture(scope="module")
def cvat():
    settings = cvat_settings()
    if settings is None:
        if os.environ.get("GSAM2_REQUIRE_CVAT") == "1":
            pytest.fail("the CVAT kit is not reachable at CVAT_URL; .ci/run starts it")
        pytest.skip("no CVAT server: start ../shared/cvat-server and set CVAT_URL (see the README)")
    url, auth = settings
    session = requests.Session()
    session.auth = auth
    session.headers["Accept"] = "application/vnd.cvat+json"

    def call(method: str, path: str, **kwargs):
        response = session.request(method, f"{url}/api/{path}", timeout=120, **kwargs)
        return response

    return call


@pytest.fixture(scope="module")
def dashboard(tiny_models, tmp_path_factory):
    """Our three functions, deployed behind the dashboard where the kit's CVAT looks for them."""
    folder = write_function(tmp_path_factory.mktemp("functions"), "grounded-sam2-detector", "test-detector",
                            LABELS)
    saved = dict(os.environ)
    os.environ.update(
        GSAM2_FUNCTION_CONFIG=str(folder / "function.yaml"), GSAM2_DETECTOR=str(tiny_models["grounding-dino"]),
        GSAM2_SEGMENTER=str(tiny_models["sam2"]), GSAM2_TRACKER=str(tiny_models["sam2-video"]),
        GSAM2_DEVICE="cpu", GSAM2_TEXT_THRESHOLD="0",
    )
    functions = [
        HostedFunction(deployed(function_config("grounded-sam2-detector", False, "test-detector", LABELS)),
                       detector),
        HostedFunction(deployed(function_config("sam2-interactor", False)), interactor),
        HostedFunction(deployed(function_config("sam2-tracker", False)), tracker),
    ]
    host = os.environ.get("CVAT_NUCLIO_HOST", "127.0.0.1")
    port = int(os.environ.get("CVAT_NUCLIO_PORT", "18070"))
    try:
        with NuclioDashboard(host, port, functions) as served:
            yield served
    finally:
        os.environ.clear()
        os.environ.update(saved)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def create_task(cvat, name: str, images: list[np.ndarray], labels: list[dict]) -> int:
    response = cvat("POST", "tasks", json={"name": name, "labels": labels})
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]
    files = {f"client_files[{i}]": (f"frame{i:03d}.png", png(image), "image/png") for i, image in enumerate(images)}
    response = cvat("POST", f"tasks/{task_id}/data", data={"image_quality": 100, "sorting_method": "natural"},
                    files=files)
    assert response.status_code == 202, response.text
    rq_id = response.json()["rq_id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = cvat("GET", f"requests/{rq_id}").json()["status"]
        if status == "finished":
            return task_id
        assert status != "failed", cvat("GET", f"requests/{rq_id}").json()
        time.sleep(0.5)
    raise AssertionError("CVAT did not finish creating the task")


@pytest.fixture(scope="module")
def image_task(cvat, dashboard):
    labels = [{"name": "car", "type": "mask"}, {"name": "person", "type": "polygon"},
              {"name": "truck", "type": "rectangle"}]
    task_id = create_task(cvat, "gsam2 images", [shapes_image(96, 128, seed=i) for i in range(3)], labels)
    yield task_id
    cvat("DELETE", f"tasks/{task_id}")


def test_cvat_lists_our_functions_with_what_we_declare(cvat, dashboard):
    response = cvat("GET", "lambda/functions")
    assert response.status_code == 200, response.text
    listed = {function["id"]: function for function in response.json()}
    assert {"gsam2-test-detector", "gsam2-sam2-interactor", "gsam2-sam2-tracker"} <= set(listed)
    assert listed["gsam2-test-detector"]["kind"] == "detector"
    assert [label["name"] for label in listed["gsam2-test-detector"]["labels_v2"]] == LABELS
    assert {label["type"] for label in listed["gsam2-test-detector"]["labels_v2"]} == {"mask"}
    interactor_info = listed["gsam2-sam2-interactor"]
    assert interactor_info["kind"] == "interactor" and interactor_info["version"] == 2
    assert interactor_info["min_pos_points"] == 0 and interactor_info["startswith_box_optional"] is True
    assert listed["gsam2-sam2-tracker"]["supported_shape_types"] == ["rectangle", "polygon"]


def core_detections(image_b64: str, tiny_models, threshold: float):
    image = decode_image(base64.b64decode(image_b64))
    [found] = ground_and_segment(
        [image], LABELS, detector=load_detector(str(tiny_models["grounding-dino"]), device="cpu"),
        segmenter=load_segmenter(str(tiny_models["sam2"]), device="cpu"), box_threshold=threshold, text_threshold=0.0,
    )
    return image, found


@pytest.mark.parametrize("conv_mask_to_poly", [False, True])
def test_detector_on_one_frame(cvat, dashboard, image_task, tiny_models, conv_mask_to_poly):
    function = dashboard.functions["gsam2-test-detector"]
    response = cvat("POST", "lambda/functions/gsam2-test-detector",
                    json={"task": image_task, "frame": 0, "threshold": 0.5, "conv_mask_to_poly": conv_mask_to_poly})
    assert response.status_code == 200, response.text
    shapes = response.json()["shapes"]
    sent = function.calls[-1]
    assert sent.get("threshold") == 0.5 and set(sent) == {"image", "threshold"}
    image, found = core_detections(sent["image"], tiny_models, 0.5)
    names = found.data["class_name"]
    kept = [i for i, name in enumerate(names) if name in ("car", "person") and found.mask[i].any()]
    assert shapes and len(shapes) == len(kept), "truck (a rectangle label) is dropped by CVAT; car and person are kept"
    assert len(kept) < len(found), "some detections were trucks"
    for shape, index in zip(sorted(shapes, key=lambda s: s["points"][-4:]), sorted(kept, key=lambda i: _bounds(found.mask[i]))):
        assert shape["type"] in (("polygon", "mask") if conv_mask_to_poly else ("mask",))
        if shape["type"] == "mask":  # CVAT's RLE of the crop, then the inclusive box
            np.testing.assert_array_equal(_decode_cvat_rle(shape["points"], *image.shape[:2]), found.mask[index])


def _bounds(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def _decode_cvat_rle(points, height, width):
    """CVAT's stored mask: run lengths (starting with zeros) over the box crop, then [xtl, ytl, xbr, ybr]."""
    *runs, xtl, ytl, xbr, ybr = [int(round(v)) for v in points]
    crop_w, crop_h = xbr - xtl + 1, ybr - ytl + 1
    flat, value = [], 0
    for run in runs:
        flat += [value] * run
        value = 1 - value
    mask = np.zeros((height, width), bool)
    mask[ytl : ybr + 1, xtl : xbr + 1] = np.array(flat, bool).reshape(crop_h, crop_w)
    return mask


def test_detector_on_the_whole_task(cvat, dashboard, image_task):
    response = cvat("POST", "lambda/requests", json={"function": "gsam2-test-detector", "task": image_task,
                                                     "threshold": 0.5, "cleanup": True})
    assert response.status_code == 200, response.text
    request_id = response.json()["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = cvat("GET", f"lambda/requests/{request_id}").json()
        if state["status"] in ("finished", "failed"):
            break
        time.sleep(0.5)
    assert state["status"] == "finished", state.get("exc_info")
    annotations = cvat("GET", f"tasks/{image_task}/annotations").json()
    frames = {shape["frame"] for shape in annotations["shapes"]}
    assert annotations["shapes"] and frames <= {0, 1, 2}
    labels = {label["id"]: label for label in cvat("GET", f"labels?task_id={image_task}").json()["results"]}
    for shape in annotations["shapes"]:
        assert (labels[shape["label_id"]]["name"], shape["type"]) in (("car", "mask"), ("person", "mask"))
        assert shape["source"] == "auto"


def test_interactor_as_the_ui_calls_it(cvat, dashboard, image_task, tiny_models):
    function = dashboard.functions["gsam2-sam2-interactor"]
    segmenter = load_segmenter(str(tiny_models["sam2"]), device="cpu")
    for request in (
        {"pos_points": [[40, 30]], "neg_points": [], "obj_bbox": []},
        {"pos_points": [[40, 30], [60, 50]], "neg_points": [[5, 5]], "obj_bbox": []},
        {"pos_points": [], "neg_points": [], "obj_bbox": [[10, 10], [70, 60]]},
        {"pos_points": [[-0.4, 30]], "neg_points": [], "obj_bbox": []},
    ):
        response = cvat("POST", "lambda/functions/gsam2-sam2-interactor", json={"task": image_task, "frame": 1,
                                                                                **request})
        assert response.status_code == 200, response.text
        image = decode_image(base64.b64decode(function.calls[-1]["image"]))
        assert function.calls[-1]["obj_bbox"] == request["obj_bbox"], "CVAT forwards the UI's [] as it is"
        mask = cvat_rules.interactor_mask(response.json(), *image.shape[:2])
        [embedding] = segmenter.embed([image])
        points = [[min(max(x, 0), image.shape[1] - 1), y] for x, y in request["pos_points"] + request["neg_points"]]
        labels = [1] * len(request["pos_points"]) + [0] * len(request["neg_points"])
        box = np.array(sum(request["obj_bbox"], []), np.float32) if request["obj_bbox"] else None
        masks, scores = segmenter.segment_prompt(embedding, np.array(points, np.float32).reshape(-1, 2),
                                                 np.array(labels), box)
        if masks[0].any():
            np.testing.assert_array_equal(mask, masks[0])
        else:
            assert mask.any()


def test_interactor_with_a_region_of_interest(cvat, dashboard, image_task):
    """CVAT 2.73 crops the frame to the ROI, moves the clicks, and pastes our mask back."""
    function = dashboard.functions["gsam2-sam2-interactor"]
    roi = [20, 10, 100, 80]
    response = cvat("POST", "lambda/functions/gsam2-sam2-interactor",
                    json={"task": image_task, "frame": 0, "pos_points": [[50, 40]], "neg_points": [], "roi": roi})
    assert response.status_code == 200, response.text
    sent = decode_image(base64.b64decode(function.calls[-1]["image"]))
    assert sent.shape[:2] == (roi[3] - roi[1], roi[2] - roi[0]) and function.calls[-1]["pos_points"] == [[30, 30]]
    full = np.array(response.json()["mask"])
    assert full.shape == (96, 128) and full.any() and not full[:, : roi[0]].any() and not full[roi[3] :].any()


@pytest.fixture(scope="module")
def video_task(cvat, dashboard):
    task_id = create_task(cvat, "gsam2 frames", list(moving_squares(22)), [{"name": "object", "type": "any"}])
    yield task_id
    cvat("DELETE", f"tasks/{task_id}")


def test_tracker_twenty_steps_then_a_restarted_function(cvat, dashboard, video_task):
    function = dashboard.functions["gsam2-sam2-tracker"]
    shapes = [{"type": "rectangle", "points": [8, 8, 24, 24]}, {"type": "polygon", "points": [40, 40, 56, 40, 48, 56]}]
    response = cvat("POST", "lambda/functions/gsam2-sam2-tracker", json={"task": video_task, "frame": 0,
                                                                         "shapes": shapes})
    assert response.status_code == 200, response.text
    assert function.calls[-1]["states"] == [], "CVAT starts tracking with states: []"
    states = response.json()["states"]
    assert all(isinstance(state, str) for state in states), "CVAT hands the client signed states"
    for frame in range(1, 22):
        if frame == 15:
            function.start()  # the function process restarted: its memory is gone, the states are not
        response = cvat("POST", "lambda/functions/gsam2-sam2-tracker",
                        json={"task": video_task, "frame": frame, "states": states})
        assert response.status_code == 200, response.text
        sent = function.calls[-1]
        assert sent["shapes"] == [None, None] and all(isinstance(s, dict) for s in sent["states"])
        body = response.json()
        cvat_rules.check_tracker_response({"shapes": body["shapes"], "states": sent["states"]}, 2,
                                          ["rectangle", "polygon"])
        assert [shape["type"] for shape in body["shapes"]] == ["rectangle", "polygon"]
        states = body["states"]
    assert len(function.calls) >= 22


# ---------------------------------------------------------------- gsam2 cvat


def gsam2_cvat(tiny_models, *args, env=None):
    import subprocess
    import sys

    command = [sys.executable, "-m", "gsam2.cli", "cvat", *args, "--detector", str(tiny_models["grounding-dino"]),
               "--segmenter", str(tiny_models["sam2"]), "--device", "cpu", "--quiet"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def labels_by_id(cvat, task_id):
    return {label["id"]: label["name"] for label in cvat("GET", f"labels?task_id={task_id}").json()["results"]}


def test_gsam2_cvat_track_uploads_one_track_per_object_and_replace_keeps_one_set(cvat, video_task, tiny_models):
    # A manual shape of the annotator's own: never touched.
    [label_id] = labels_by_id(cvat, video_task)
    manual = {"shapes": [{"type": "rectangle", "frame": 0, "label_id": label_id, "points": [1, 1, 9, 9],
                          "source": "manual", "attributes": []}], "tracks": [], "tags": []}
    assert cvat("PATCH", f"tasks/{video_task}/annotations?action=create", json=manual).status_code == 200
    runs = []
    for replace in ([], ["--replace"]):
        result = gsam2_cvat(tiny_models, "track", "--task", str(video_task), "--box-threshold", "0.7",
                            "--text-threshold", "0", "--step", "5", "--tracker", str(tiny_models["sam2-video"]),
                            *replace)
        assert result.returncode == 0, result.stderr
        assert "frames processed: 22" in result.stdout
        annotations = cvat("GET", f"tasks/{video_task}/annotations").json()
        runs.append(annotations)
    first, second = runs
    assert first["tracks"], "the tiny model found something to track"
    assert len(second["tracks"]) == len(first["tracks"]), "--replace removed the first run's tracks"
    assert [s for s in second["shapes"] if s["source"] == "manual"], "the manual shape is still there"
    for track in second["tracks"]:
        frames = [shape["frame"] for shape in track["shapes"]]
        assert frames == sorted(frames) and track["source"] == "auto"
        assert {shape["type"] for shape in track["shapes"]} == {"polygon"}, "an 'any' label takes polygons in tracks"
        *seen, last = track["shapes"]
        if last["outside"]:  # the object ended before the last frame: hidden from there on
            assert last["frame"] == seen[-1]["frame"] + 1 and not any(s["outside"] for s in seen)


def test_gsam2_cvat_annotate_uses_each_labels_shape_type(cvat, image_task, tiny_models):
    result = gsam2_cvat(tiny_models, "annotate", "--task", str(image_task), "--box-threshold", "0.5",
                        "--text-threshold", "0", "--replace")
    assert result.returncode == 0, result.stderr
    names = labels_by_id(cvat, image_task)
    shapes = [s for s in cvat("GET", f"tasks/{image_task}/annotations").json()["shapes"] if s["source"] == "auto"]
    kinds = {(names[s["label_id"]], s["type"]) for s in shapes}
    assert shapes and kinds <= {("car", "mask"), ("person", "polygon"), ("truck", "rectangle")}
    uploaded = next(line for line in result.stdout.splitlines() if line.startswith("shapes uploaded:"))
    assert int(uploaded.split(":")[1]) == len(shapes)


@pytest.mark.parametrize(
    ("arguments", "env", "message"),
    [
        (["annotate", "--task", "999999"], {}, "task 999999: not found"),
        (["annotate", "--task", "1"], {"CVAT_PASSWORD": "wrong-password"}, "refused the credentials"),
        (["annotate", "--task", "TASK", "--prompt", "unicorn"], {}, "'unicorn' matches no label of task"),
        (["annotate", "--task", "1"], {"CVAT_URL": ""}, "CVAT_URL is not set"),
    ],
)
def test_gsam2_cvat_errors_are_one_line(cvat, image_task, tiny_models, arguments, env, message):
    arguments = [str(image_task) if a == "TASK" else a for a in arguments]
    result = gsam2_cvat(tiny_models, *arguments, env=env)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert message in line


@pytest.fixture(scope="module")
def real_video_task(cvat, dashboard, tmp_path_factory):
    """A task made from an MP4 (CVAT keeps it as video chunks), split into jobs of 10 frames."""
    from .media import write_video

    video = write_video(tmp_path_factory.mktemp("video") / "squares.mp4", moving_squares(22))
    response = cvat("POST", "tasks", json={"name": "gsam2 video", "labels": [{"name": "square", "type": "any"}],
                                           "segment_size": 10})
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]
    response = cvat("POST", f"tasks/{task_id}/data", data={"image_quality": 100},
                    files={"client_files[0]": ("squares.mp4", video.read_bytes(), "video/mp4")})
    assert response.status_code == 202, response.text
    rq_id = response.json()["rq_id"]
    deadline = time.monotonic() + 180
    while cvat("GET", f"requests/{rq_id}").json()["status"] != "finished":
        assert time.monotonic() < deadline and cvat("GET", f"requests/{rq_id}").json()["status"] != "failed"
        time.sleep(0.5)
    yield task_id
    cvat("DELETE", f"tasks/{task_id}")


def test_gsam2_cvat_track_on_a_video_task_and_on_one_of_its_jobs(cvat, real_video_task, tiny_models):
    common = ["--box-threshold", "0.7", "--text-threshold", "0", "--step", "5",
              "--tracker", str(tiny_models["sam2-video"])]
    result = gsam2_cvat(tiny_models, "track", "--task", str(real_video_task), *common)
    assert result.returncode == 0, result.stderr
    assert "frames processed: 22" in result.stdout, "the video's chunks were decoded in full"
    jobs = sorted(cvat("GET", f"jobs?task_id={real_video_task}").json()["results"], key=lambda j: j["start_frame"])
    second = jobs[1]
    result = gsam2_cvat(tiny_models, "track", "--job", str(second["id"]), "--replace", *common)
    assert result.returncode == 0, result.stderr
    expected = second["stop_frame"] - second["start_frame"] + 1
    assert f"frames processed: {expected}" in result.stdout
    tracks = cvat("GET", f"tasks/{real_video_task}/annotations").json()["tracks"]
    in_job = [t for t in tracks if second["start_frame"] <= t["frame"] <= second["stop_frame"]]
    assert in_job and all(second["start_frame"] <= s["frame"] <= second["stop_frame"] + 1
                          for t in in_job for s in t["shapes"])


def test_gsam2_cvat_track_refuses_mask_labels_on_overlapping_jobs(cvat, dashboard, tiny_models, tmp_path):
    """CVAT 2.73 cannot merge mask tracks across overlapping jobs (a 500 from its interpolation): say so first."""
    from .media import write_video

    video = write_video(tmp_path / "v.mp4", moving_squares(12))
    response = cvat("POST", "tasks", json={"name": "gsam2 mask video", "labels": [{"name": "blob", "type": "mask"}],
                                           "segment_size": 6, "overlap": 2})
    task_id = response.json()["id"]
    try:
        response = cvat("POST", f"tasks/{task_id}/data", data={"image_quality": 100},
                        files={"client_files[0]": ("v.mp4", video.read_bytes(), "video/mp4")})
        rq_id = response.json()["rq_id"]
        deadline = time.monotonic() + 180
        while cvat("GET", f"requests/{rq_id}").json()["status"] != "finished":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        result = gsam2_cvat(tiny_models, "track", "--task", str(task_id), "--tracker", str(tiny_models["sam2-video"]))
        assert result.returncode == 2
        assert "cannot merge mask tracks" in result.stderr and "blob" in result.stderr
    finally:
        cvat("DELETE", f"tasks/{task_id}")
