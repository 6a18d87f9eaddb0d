"""A serving function's own limits: one request cannot exhaust it, and every answer lies on its frame.

Decompression bombs (a small PNG of huge dimensions) go through the real handlers
(tests/nuclio_harness.py) in a separate process under a memory cap, whose peak
resident memory is measured around each request.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from gsam2.nuclio.handlers import detector, interactor, tracker
from gsam2.nuclio.generate import write_function

from . import cvat_rules
from .conftest import REPO_ROOT, shapes_image
from .nuclio_harness import invoke, make_context
from .test_cvat_conformance import lose_everything

IMAGE = shapes_image(90, 120)
HEIGHT, WIDTH = IMAGE.shape[:2]


def b64(image: np.ndarray | bytes) -> str:
    if isinstance(image, np.ndarray):
        import io

        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        image = buffer.getvalue()
    return base64.b64encode(image).decode()


def bomb_png(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A real single-colour grayscale PNG of ``width`` x ``height``: every row is there, deflated to almost nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width * bit_depth + 7) // 8)  # filter byte "none", then black pixels
    rows_per_block = max(1, 2**22 // len(row))
    compressor, parts, left = zlib.compressobj(9), [], height
    while left:
        count = min(left, rows_per_block)
        parts.append(compressor.compress(row * count))
        left -= count
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)  # colour type 0: grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def ordinary_request(module_name: str, image: str) -> dict:
    return {
        "detector": {"image": image, "threshold": 0.5},
        "interactor": {"image": image, "pos_points": [[30, 40]], "neg_points": [], "obj_bbox": []},
        "tracker": {"image": image, "shapes": [{"type": "rectangle", "points": [10, 10, 50, 40]}], "states": []},
    }[module_name]


SERVE_BOMBS = """
import base64, importlib, json, re, resource, sys
from PIL import Image
from tests import test_nuclio_limits as t
from tests.nuclio_harness import invoke, make_context

def status_kib(field):
    return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))

name = sys.argv[1]
module = importlib.import_module("gsam2.nuclio.handlers." + name)
context = make_context()
module.init_context(context)
ordinary = t.ordinary_request(name, t.b64(t.IMAGE))
assert invoke(module, context, ordinary)[0] == 200
# A cap on the address space, so that a request that does decode the bomb fails here instead of
# exhausting the machine: what the process has mapped now (torch included) and 1.5 GiB more.
cap = status_kib("VmSize") * 1024 + 3 * 2**29
resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
pil_limit = Image.MAX_IMAGE_PIXELS
results = []
for width, height, bits in [(12000, 12000, 8), (30000, 30000, 1)]:
    bomb = t.b64(t.bomb_png(width, height, bits))
    open("/proc/self/clear_refs", "w").write("5")  # resets the peak resident size (VmHWM) to the current one
    before = status_kib("VmRSS")
    status, body = invoke(module, context, {**ordinary, "image": bomb})
    peak = status_kib("VmHWM") - before
    after, _ = invoke(module, context, ordinary)
    results.append({"size": [width, height], "status": status, "body": body, "peak_kib": peak, "next": after})
results.append({"pil_limit_unchanged": Image.MAX_IMAGE_PIXELS == pil_limit})
print(json.dumps(results))
"""


@pytest.mark.parametrize("module_name", ["detector", "interactor", "tracker"])
def test_decompression_bombs_are_refused_from_the_header_and_the_function_goes_on(models_env, tmp_path, module_name):
    """12000x12000 (144 MP, 140 KB of PNG) and 30000x30000 (900 MP): a 413 in one line, a few MiB of memory."""
    folder = write_function(tmp_path, "grounded-sam2-detector", "bombs", ["Car", "person"])
    models_env.setenv("GSAM2_FUNCTION_CONFIG", str(folder / "function.yaml"))
    result = subprocess.run(
        [sys.executable, "-c", SERVE_BOMBS, module_name],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=dict(os.environ),  # the models' environment; `tests` is imported from the working folder
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    *bombs, pil = json.loads(result.stdout.strip().splitlines()[-1])
    for bomb in bombs:
        width, height = bomb["size"]
        message = bomb["body"].get("error", "")
        assert bomb["status"] == 413, f"{width}x{height}: {bomb['status']} {message[:300]}"
        assert "\n" not in message and "GSAM2_MAX_IMAGE_PIXELS" in message and "40,000,000" in message
        # Decoding 144 MP as RGB alone is 432 MB; the header read is a few KiB.
        assert bomb["peak_kib"] < 32 * 1024, f"{width}x{height}: peak {bomb['peak_kib'] / 1024:.0f} MiB more"
        assert bomb["next"] == 200, "the next ordinary request is answered"
    assert pil == {"pil_limit_unchanged": True}, "the CLI's limit (PIL's global) is left alone"


@pytest.fixture
def detector_context(models_env, tmp_path):
    folder = write_function(tmp_path, "grounded-sam2-detector", "limits", ["Car", "person"])
    models_env.setenv("GSAM2_FUNCTION_CONFIG", str(folder / "function.yaml"))
    context = make_context()
    detector.init_context(context)
    return context


@pytest.fixture
def interactor_context(models_env):
    context = make_context()
    interactor.init_context(context)
    return context


@pytest.fixture
def tracker_context(models_env):
    context = make_context()
    tracker.init_context(context)
    return context


def test_the_pixel_limit_is_set_per_function(detector_context, interactor_context, tracker_context, models_env):
    models_env.setenv("GSAM2_MAX_IMAGE_PIXELS", str(WIDTH * HEIGHT - 1))
    for module, context in ((detector, detector_context), (interactor, interactor_context),
                            (tracker, tracker_context)):
        status, body = invoke(module, context, ordinary_request(module.__name__.rsplit(".", 1)[1], b64(IMAGE)))
        assert status == 413 and body["error"] == (
            f"'image' is 120x90 (10,800 pixels), more than this function's limit of 10,799 pixels "
            "(GSAM2_MAX_IMAGE_PIXELS)"
        )
    models_env.setenv("GSAM2_MAX_IMAGE_PIXELS", "-3")
    with pytest.raises(ValueError, match="GSAM2_MAX_IMAGE_PIXELS='-3'"):
        tracker.init_context(make_context())  # a wrong value fails the deployment, not each request


class LargeMasksDetector:
    """Speaks the Detector interface of a mask-making backend: one mask per phrase, each most of the image."""

    name, requires_prompt, produces_masks = "large-masks", True, True

    def validate_phrases(self, phrases):
        pass

    def detect(self, images, phrases, box_threshold, text_threshold):
        results = []
        for image in images:
            masks = np.zeros((len(phrases), *image.shape[:2]), bool)
            for i in range(len(phrases)):
                masks[i, 2 + i :, 3 + i :] = True
            detections = sv.Detections(xyxy=sv.mask_to_xyxy(masks).astype(np.float32), mask=masks,
                                       confidence=np.full(len(phrases), 0.9, np.float32),
                                       class_id=np.arange(len(phrases)))
            detections.data["class_name"] = np.array(list(phrases))
            results.append(detections)
        return results


def test_detector_masks_over_the_answer_limit_come_as_polygons_then_413(detector_context, models_env):
    detector_context.user_data.detector, detector_context.user_data.segmenter = LargeMasksDetector(), None
    status, full = invoke(detector, detector_context, {"image": b64(IMAGE)})
    assert status == 200 and [item["type"] for item in full] == ["mask", "mask"]
    one_mask = len(json.dumps(full[0]))  # about 30 KB: 3 bytes per pixel of the box
    models_env.setenv("GSAM2_MAX_RESPONSE_MB", str(1.5 * one_mask / 2**20))
    status, items = invoke(detector, detector_context, {"image": b64(IMAGE)})
    assert status == 200 and [item["type"] for item in items] == ["mask", "polygon"]
    assert len(json.dumps(items)) <= 1.5 * one_mask
    assert items[1]["points"] == full[1]["points"] and items[1]["label"] == full[1]["label"]
    spec = [{"name": "Car", "type": "mask"}, {"name": "person", "type": "mask"}]
    stored = cvat_rules.stored_detector_shapes(items, spec, {"Car": "mask", "person": "mask"}, False)
    assert [shape["type"] for shape in stored] == ["mask", "polygon"], "CVAT stores the polygon in the mask label"
    models_env.setenv("GSAM2_MAX_RESPONSE_MB", str(300 / 2**20))  # not even one polygon fits
    status, body = invoke(detector, detector_context, {"image": b64(IMAGE)})
    assert status == 413 and "\n" not in body["error"] and "GSAM2_MAX_RESPONSE_MB" in body["error"]
    models_env.delenv("GSAM2_MAX_RESPONSE_MB")
    assert invoke(detector, detector_context, {"image": b64(IMAGE)}) == (200, full)


def test_interactor_mask_over_the_answer_limit_is_413_before_it_is_built(interactor_context, models_env):
    request = ordinary_request("interactor", b64(IMAGE))
    status, body = invoke(interactor, interactor_context, request)
    assert status == 200
    size = len(json.dumps(body))
    models_env.setenv("GSAM2_MAX_RESPONSE_MB", str((size - 1) / 2**20))
    status, refused = invoke(interactor, interactor_context, request)
    assert status == 413 and refused["error"] == (
        f"the mask of this 120x90 image would be {size / 2**20:.1f} MB, more than this function's limit of "
        f"{(size - 1) / 2**20:g} MB (GSAM2_MAX_RESPONSE_MB)"
    ), "the estimate is the exact size of the JSON"
    models_env.setenv("GSAM2_MAX_RESPONSE_MB", str(size / 2**20))
    assert invoke(interactor, interactor_context, request) == (200, body)


def test_any_answer_over_the_limit_is_413(tracker_context, models_env):
    models_env.setenv("GSAM2_MAX_RESPONSE_MB", str(100 / 2**20))  # a tracker's answer for one object is larger
    status, body = invoke(tracker, tracker_context, ordinary_request("tracker", b64(IMAGE)))
    assert status == 413 and "the answer would be" in body["error"] and "\n" not in body["error"]
    models_env.delenv("GSAM2_MAX_RESPONSE_MB")
    assert invoke(tracker, tracker_context, ordinary_request("tracker", b64(IMAGE)))[0] == 200


def test_cvat_sdk_functions_refuse_a_large_image_from_its_header(tiny_models, monkeypatch):
    """The agent-served cvat-sdk functions get PIL images opened lazily: refused before they are decoded."""
    import io

    from gsam2.nuclio.sdk import detection as sdk_detection
    from gsam2.nuclio.sdk import interaction as sdk_interaction
    from gsam2.nuclio.sdk import tracking as sdk_tracking
    from gsam2.nuclio.handlers.protocol import RequestError

    from .test_cvat_sdk_functions import DetectionContext

    buffer = io.BytesIO()
    Image.fromarray(IMAGE).save(buffer, format="PNG")
    decoded = []
    models = {"segmenter": str(tiny_models["sam2"]), "device": "cpu"}
    monkeypatch.setenv("GSAM2_MAX_IMAGE_PIXELS", str(WIDTH * HEIGHT - 1))  # the serving default, as the functions'
    functions = [
        (sdk_detection, sdk_detection.create(prompt="car", detector=str(tiny_models["grounding-dino"]), **models)),
        (sdk_interaction, sdk_interaction.create(**models)),
        (sdk_tracking, sdk_tracking.create(tracker=str(tiny_models["sam2-video"]), device="cpu")),
    ]
    monkeypatch.delenv("GSAM2_MAX_IMAGE_PIXELS")
    function = sdk_interaction.create(max_image_pixels=WIDTH * HEIGHT, **models)  # -p max_image_pixels=int:N
    assert function.preprocess_image(None, Image.open(io.BytesIO(buffer.getvalue()))) is not None
    for module, function in functions:
        monkeypatch.setattr(module, "to_rgb_array", lambda image: decoded.append(image))
        image = Image.open(io.BytesIO(buffer.getvalue()))
        with pytest.raises(RequestError, match=r"is 120x90 \(10,800 pixels\), more than this function's limit"):
            if module is sdk_detection:
                function.detect(DetectionContext(), image)
            else:
                function.preprocess_image(None, image)
    assert decoded == [], "nothing was decoded"


# ------------------------------------------------------------- the tracker's answers lie on the frame


SMALL = np.asarray(Image.fromarray(IMAGE).resize((60, 45)))


def on_frame(body: dict, width: int, height: int) -> bool:
    """Every answered coordinate, and every state's box, inside the ``width`` x ``height`` frame."""
    values = [(v, width if i % 2 == 0 else height) for shape in body["shapes"] for i, v in
              enumerate(shape["points"] if isinstance(shape, dict) else shape)]
    values += [(v, width if i % 2 == 0 else height) for state in body["states"] for i, v in enumerate(state["box"])]
    return all(0 <= v <= limit for v, limit in values)


@pytest.mark.parametrize("shape_type", ["rectangle", "polygon"])
def test_tracker_state_carried_onto_a_smaller_frame_is_clipped(tracker_context, monkeypatch, shape_type):
    points = [30, 20, 100, 70] if shape_type == "rectangle" else [30, 20, 100, 20, 100, 70, 30, 70]
    _, body = invoke(tracker, tracker_context, {"image": b64(IMAGE), "shapes": [{"type": shape_type,
                                                "points": points}], "states": []})
    states = cvat_rules.cvat_round_trip(body["states"])
    status, body = invoke(tracker, tracker_context, {"image": b64(SMALL), "shapes": [None], "states": states})
    assert status == 200 and on_frame(body, 60, 45), body["shapes"]
    lose_everything(monkeypatch)  # SAM 2 loses it: the last known shape, clipped to this frame
    status, body = invoke(tracker, tracker_context, {"image": b64(SMALL), "shapes": [None], "states": states})
    assert status == 200 and on_frame(body, 60, 45), body["shapes"]
    cvat_rules.check_tracker_response(body, 1, ["rectangle", "polygon"])


def test_tracker_state_off_a_smaller_frame_restarts_from_the_shape_or_is_a_400(tracker_context):
    """120x90 then 60x45: the box [60, 20, 100, 70] has no pixel on the smaller frame."""
    shape = {"type": "rectangle", "points": [60, 20, 100, 70]}
    _, body = invoke(tracker, tracker_context, {"image": b64(IMAGE), "shapes": [shape], "states": []})
    states = cvat_rules.cvat_round_trip(body["states"])
    status, refused = invoke(tracker, tracker_context, {"image": b64(SMALL), "shapes": [None], "states": states})
    assert status == 400 and refused["error"] == (
        "'states[0]' holds the box [60.0, 20.0, 100.0, 70.0], outside this 60x45 frame (a frame of another size?); "
        "send the object's shape to start again"
    )
    restart = {"type": "rectangle", "points": [10, 5, 40, 30]}
    status, body = invoke(tracker, tracker_context, {"image": b64(SMALL), "shapes": [restart], "states": states})
    assert status == 200 and body["shapes"] == [restart] and body["states"][0]["token"] != states[0]["token"]
    assert on_frame(body, 60, 45)


def forged(box: list[float], shape_type: str = "rectangle") -> dict:
    return {"v": 1, "token": "f" * 32, "step": 3, "type": shape_type, "dict": True, "box": box}


@pytest.mark.parametrize("shape_type", ["rectangle", "polygon"])
def test_tracker_forged_state_answers_are_clipped(tracker_context, monkeypatch, shape_type):
    state = forged([-1e30, -1e30, 1e30, 1e30], shape_type)
    status, body = invoke(tracker, tracker_context, {"image": b64(IMAGE), "shapes": [None], "states": [state]})
    assert status == 200 and on_frame(body, WIDTH, HEIGHT), body
    lose_everything(monkeypatch)
    status, body = invoke(tracker, tracker_context, {"image": b64(IMAGE), "shapes": [None], "states": [state]})
    assert status == 200 and on_frame(body, WIDTH, HEIGHT), body
    assert body["states"][0]["box"] == [0, 0, WIDTH, HEIGHT], "the whole frame: all of the forged box that is on it"


def test_tracker_forged_state_off_the_frame_is_a_400(tracker_context):
    for box in ([1e30, 1e30, 2e30, 2e30], [-50, 10, -1, 20], [10, 90, 20, 95]):
        status, body = invoke(tracker, tracker_context, {"image": b64(IMAGE), "shapes": [None],
                                                         "states": [forged(box)]})
        assert status == 400 and "outside this 120x90 frame" in body["error"] and "\n" not in body["error"], box
    assert invoke(tracker, tracker_context, ordinary_request("tracker", b64(IMAGE)))[0] == 200


def test_tracker_starting_shape_is_answered_inside_the_frame(tracker_context):
    shape = {"type": "polygon", "points": [-20, 10, 150, 10, 60, 200]}
    status, body = invoke(tracker, tracker_context, {"image": b64(IMAGE), "shapes": [shape], "states": []})
    assert status == 200 and body["shapes"][0]["points"] == [0, 10, 120, 10, 60, 90]
    status, body = invoke(tracker, tracker_context, {"image": b64(IMAGE), "shapes": [[120, 10, 150, 40]],
                                                     "states": []})
    assert status == 400 and "does not cover any of the 120x90 image" in body["error"]
