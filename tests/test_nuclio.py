"""The CVAT Nuclio functions, called exactly as Nuclio calls them, with the JSON CVAT sends."""

from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

from gsam2.core import ground_and_segment, load_detector, load_segmenter
from gsam2.nuclio import detector, interactor, tracker
from gsam2.nuclio.functions import FUNCTIONS, function_config, write_function

from .conftest import REPO_ROOT, shapes_image

FUNCTIONS_DIR = REPO_ROOT / "nuclio" / "functions"


class Logger:
    def __init__(self):
        self.lines = []

    def info(self, message, *args):
        self.lines.append(("info", message))

    def warn(self, message, *args):
        self.lines.append(("warn", message))

    def error(self, message, *args):
        self.lines.append(("error", message))

    debug = info


class Response:
    """Nuclio's response object, as the Python runtime provides it on the context."""

    def __init__(self, body=None, headers=None, content_type=None, status_code=200):
        self.body, self.headers, self.content_type, self.status_code = body, headers, content_type, status_code


def make_context():
    return SimpleNamespace(user_data=SimpleNamespace(), logger=Logger(), Response=Response)


def event(payload) -> SimpleNamespace:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return SimpleNamespace(body=body, headers={"Content-Type": "application/json"}, method="POST")


def call(module, context, payload):
    response = module.handler(context, event(payload))
    assert response.content_type == "application/json"
    return response.status_code, json.loads(response.body)


def b64(image: np.ndarray, fmt="PNG") -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


IMAGE = shapes_image(90, 120)


@pytest.fixture
def models_env(monkeypatch, tiny_models):
    monkeypatch.setenv("GSAM2_DETECTOR", str(tiny_models["grounding-dino"]))
    monkeypatch.setenv("GSAM2_SEGMENTER", str(tiny_models["sam2"]))
    monkeypatch.setenv("GSAM2_TRACKER", str(tiny_models["sam2-video"]))
    monkeypatch.setenv("GSAM2_DEVICE", "cpu")
    return monkeypatch


@pytest.fixture
def detector_context(models_env, tmp_path):
    folder = write_function(tmp_path, "grounded-sam2-detector", "test-detector", ["Car", "person"])
    models_env.setenv("GSAM2_FUNCTION_CONFIG", str(folder / "function.yaml"))
    models_env.setenv("GSAM2_TEXT_THRESHOLD", "0")
    context = make_context()
    detector.init_context(context)
    return context


def decode_cvat_mask(item, height, width):
    """CVAT's rule: the last four numbers are the inclusive box, the rest is its crop, row-major."""
    *values, xtl, ytl, xbr, ybr = item["mask"]
    mask = np.zeros((height, width), bool)
    mask[ytl : ybr + 1, xtl : xbr + 1] = np.array(values, bool).reshape(ybr - ytl + 1, xbr - xtl + 1)
    return mask


def test_detector_response_matches_cvat_schema_and_the_core(detector_context, tiny_models):
    status, items = call(detector, detector_context, {"image": b64(IMAGE), "threshold": 0.5})
    assert status == 200 and items
    [expected] = ground_and_segment(
        [IMAGE],
        ["car", "person"],
        detector=load_detector(str(tiny_models["grounding-dino"]), device="cpu"),
        segmenter=load_segmenter(str(tiny_models["sam2"]), device="cpu"),
        box_threshold=0.5,
        text_threshold=0.0,
    )
    assert len(items) == len(expected)
    for item, mask in zip(items, expected.mask):
        assert set(item) == {"label", "type", "points", "mask", "confidence", "attributes"}
        assert item["label"] in {"Car", "person"}, "label names come from the spec, as written there"
        assert item["type"] == "mask" and isinstance(item["confidence"], str) and item["attributes"] == []
        assert 0 <= float(item["confidence"]) <= 1
        assert len(item["points"]) >= 6 and len(item["points"]) % 2 == 0
        np.testing.assert_array_equal(decode_cvat_mask(item, 90, 120), mask)


def test_detector_rectangles_only(detector_context, models_env):
    models_env.setenv("GSAM2_RECTANGLES_ONLY", "1")
    detector.init_context(detector_context)
    status, items = call(detector, detector_context, {"image": b64(IMAGE), "threshold": 0.5})
    assert status == 200 and items
    assert all(item["type"] == "rectangle" and len(item["points"]) == 4 and "mask" not in item for item in items)


def test_detector_default_coco_spec_splits_into_prompts_that_fit(models_env):
    models_env.setenv("GSAM2_FUNCTION_CONFIG", str(FUNCTIONS_DIR / "grounded-sam2-detector" / "function.yaml"))
    context = make_context()
    detector.init_context(context)
    groups = context.user_data.groups
    assert sum(len(group) for group in groups) == 80 and len(groups) > 1  # the tiny vocabulary spells words out
    status, _ = call(detector, context, {"image": b64(IMAGE, "JPEG")})
    assert status == 200


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "no 'image'"),
        ({"image": "%%%not base64%%%"}, "not valid base64"),
        ({"image": base64.b64encode(b"hello, not an image").decode()}, "not an image"),
        (b"{not json", "not JSON"),
        ({"image": b64(IMAGE), "threshold": 7}, "between 0 and 1"),
    ],
)
def test_detector_bad_requests_get_400_and_the_function_keeps_serving(detector_context, payload, message):
    status, body = call(detector, detector_context, payload)
    assert status == 400 and message in body["error"]
    status, _ = call(detector, detector_context, {"image": b64(IMAGE)})
    assert status == 200


@pytest.fixture
def interactor_context(models_env):
    context = make_context()
    interactor.init_context(context)
    return context


def test_interactor_version_2_response_and_embedding_cache(interactor_context, monkeypatch):
    embeds = []
    segmenter = interactor_context.user_data.segmenter
    real = segmenter.embed
    monkeypatch.setattr(segmenter, "embed", lambda images: embeds.append(1) or real(images))
    image = b64(IMAGE)
    for clicks in ([[30, 40]], [[30, 40], [50, 20]]):
        status, body = call(
            interactor,
            interactor_context,
            {"image": image, "pos_points": clicks, "neg_points": [[5, 5]], "obj_bbox": None},
        )
        assert status == 200, body
        assert set(body) == {"mask", "bounds", "points"}
        if body["mask"]:
            x1, y1, x2, y2 = body["bounds"]
            assert np.array(body["mask"]).shape == (y2 - y1 + 1, x2 - x1 + 1)
            assert set(np.unique(body["mask"])) <= {0, 255}
    assert embeds == [1], "the second click reuses the cached embedding"
    status, body = call(
        interactor,
        interactor_context,
        {"image": image, "pos_points": [], "neg_points": [], "obj_bbox": [[10, 10], [60, 50]]},
    )
    assert status == 200


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"pos_points": [[500, 10]], "neg_points": []}, "lies outside the 120x90 image"),
        ({"pos_points": [[1]], "neg_points": []}, "must be [x, y]"),
        ({"pos_points": [], "neg_points": []}, "at least one positive point"),
        ({"pos_points": [[5, 5]], "obj_bbox": [[200, 200], [300, 300]]}, "is empty inside"),
    ],
)
def test_interactor_bad_requests(interactor_context, payload, message):
    status, body = call(interactor, interactor_context, {"image": b64(IMAGE), **payload})
    assert status == 400 and message in body["error"]
    assert call(interactor, interactor_context, {"image": b64(IMAGE), "pos_points": [[3, 3]]})[0] == 200


@pytest.fixture
def tracker_context(models_env):
    models_env.setenv("GSAM2_TRACKER_MAX_OBJECTS", "2")
    context = make_context()
    tracker.init_context(context)
    return context


def test_tracker_keeps_order_and_state_across_frames(tracker_context):
    shapes = [[10, 10, 50, 40], [60, 20, 100, 70]]
    status, body = call(tracker, tracker_context, {"image": b64(IMAGE), "shapes": shapes, "states": [None, None]})
    assert status == 200
    assert len(body["shapes"]) == 2 and len(body["states"]) == 2
    assert all(isinstance(state, str) and len(state) < 64 for state in body["states"]), "states stay small"
    for shape in body["shapes"]:
        assert len(shape) == 4 and shape[0] < shape[2] and shape[1] < shape[3]
    next_frame = b64(np.roll(IMAGE, 3, axis=1))
    status, again = call(
        tracker, tracker_context, {"image": next_frame, "shapes": body["shapes"], "states": body["states"]}
    )
    assert status == 200 and again["states"] == body["states"]


def test_tracker_forged_or_expired_state_reinitialises(tracker_context):
    status, body = call(
        tracker, tracker_context, {"image": b64(IMAGE), "shapes": [[10, 10, 50, 40]], "states": ["forged-or-expired"]}
    )
    assert status == 200 and body["states"][0] != "forged-or-expired"


def test_tracker_memory_is_bounded(tracker_context):
    for _ in range(3):
        call(tracker, tracker_context, {"image": b64(IMAGE), "shapes": [[10, 10, 50, 40]], "states": [None]})
    assert len(tracker_context.user_data.memories) == 2


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"shapes": [], "states": []}, "non-empty list"),
        ({"shapes": [[1, 2, 3, 4]], "states": []}, "as long as 'shapes'"),
        ({"shapes": [[1, 2, 3]], "states": [None]}, "must be [x1, y1, x2, y2]"),
        ({"shapes": [[500, 500, 600, 600]], "states": [None]}, "does not cover"),
    ],
)
def test_tracker_bad_requests(tracker_context, payload, message):
    status, body = call(tracker, tracker_context, {"image": b64(IMAGE), **payload})
    assert status == 400 and message in body["error"]
    assert call(tracker, tracker_context, {"image": b64(IMAGE), "shapes": [[1, 1, 20, 20]], "states": [None]})[0] == 200


def test_concurrent_requests_against_one_function(detector_context):
    """Like Nuclio's worker pool: a fixed set of threads serving many requests at once."""
    from concurrent.futures import ThreadPoolExecutor

    image = b64(IMAGE)
    _, expected = call(detector, detector_context, {"image": image, "threshold": 0.5})
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(call, detector, detector_context, {"image": image, "threshold": 0.5}) for _ in range(36)]
        responses = [future.result(timeout=300) for future in futures]
    assert all(status == 200 and body == expected for status, body in responses)


SERVE_CONCURRENTLY = """
import gc, json, os, sys
from concurrent.futures import ThreadPoolExecutor
import psutil
from tests import test_nuclio as t
from gsam2.nuclio import detector

context = t.make_context()
detector.init_context(context)
image = t.b64(t.IMAGE)
process = psutil.Process()
rss = []
with ThreadPoolExecutor(max_workers=6) as pool:
    for _ in range(8):
        list(pool.map(lambda _: t.call(detector, context, {"image": image, "threshold": 0.5}), range(18)))
        gc.collect()
        rss.append(process.memory_info().rss)
print(json.dumps(rss))
"""


def test_function_memory_is_stable_under_concurrent_load(models_env, tmp_path):
    """A function process (as Nuclio runs it) serving 144 concurrent requests: memory stays flat."""
    import subprocess
    import sys

    folder = write_function(tmp_path, "grounded-sam2-detector", "load-detector", ["Car", "person"])
    models_env.setenv("GSAM2_FUNCTION_CONFIG", str(folder / "function.yaml"))
    result = subprocess.run(
        [sys.executable, "-c", SERVE_CONCURRENTLY],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rss = json.loads(result.stdout.strip().splitlines()[-1])
    growth_mb = (max(rss[2:]) - rss[2]) / 2**20  # after two warm-up bursts of 18 requests
    print(f"RSS after each burst of 18 requests (MiB): {[round(r / 2**20) for r in rss]}")
    assert growth_mb < 50, f"memory grew {growth_mb:.1f} MiB over 108 requests after warm-up"


def test_function_files_parse_and_match_the_generator(tmp_path):
    for kind in FUNCTIONS:
        for gpu, name in ((False, "function.yaml"), (True, "function-gpu.yaml")):
            committed = yaml.safe_load((FUNCTIONS_DIR / kind / name).read_text())
            assert committed == yaml.safe_load(yaml.safe_dump(function_config(kind, gpu)))
            annotations = committed["metadata"]["annotations"]
            assert committed["metadata"]["name"] != "pth-facebookresearch-sam-vit-h"
            assert all(isinstance(value, str) for value in annotations.values()), "Nuclio annotations are strings"
            assert ("nvidia.com/gpu" in committed["spec"].get("resources", {}).get("limits", {})) == gpu
            assert committed["spec"]["triggers"]["myHttpTrigger"]["attributes"]["maxRequestBodySize"] > 0
            if annotations["type"] == "detector":
                labels = json.loads(annotations["spec"])
                names = [label["name"] for label in labels]
                assert len(names) == len(set(names)) == 80
            if annotations["type"] == "interactor":
                assert int(annotations["version"]) >= 2
        assert "handler" in (FUNCTIONS_DIR / kind / "main.py").read_text()


def test_custom_label_file_makes_a_detector(tmp_path):
    from gsam2.nuclio.functions import main

    labels = tmp_path / "labels.txt"
    labels.write_text("forklift\npallet\n\n")
    assert main([str(tmp_path / "out"), "--labels", str(labels), "--name", "warehouse"]) == 0
    config = yaml.safe_load((tmp_path / "out" / "warehouse" / "function.yaml").read_text())
    assert [label["name"] for label in json.loads(config["metadata"]["annotations"]["spec"])] == ["forklift", "pallet"]
    with pytest.raises(ValueError, match="unique"):
        function_config("grounded-sam2-detector", False, labels=["a", "a"])


def test_deploy_script_stages_each_function_for_nuctl(tmp_path):
    """deploy.sh with a stand-in nuctl: what it would hand to Nuclio for each function."""
    import os
    import subprocess

    log = tmp_path / "nuctl.log"
    fake = tmp_path / "bin" / "nuctl"
    fake.parent.mkdir()
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ "$1" == deploy ]]; then\n'
        '  path=""; prev=""; for a in "$@"; do [[ "$prev" == --path ]] && path="$a"; prev="$a"; done\n'
        f'  echo "$* :: $(cd "$path" && ls main.py function.yaml gsam2-src/pyproject.toml | tr "\\n" " ")" >> {log}\n'
        "fi\n"
    )
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}")
    deploy = REPO_ROOT / "nuclio" / "deploy.sh"
    result = subprocess.run(["bash", str(deploy), "--gpu"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert len(lines) == len(FUNCTIONS)
    for line in lines:
        assert "--project-name cvat" in line and "--platform local" in line
        staged = set(line.split(" :: ")[1].split())
        assert staged == {"main.py", "function.yaml", "gsam2-src/pyproject.toml"}


def _build_steps(config: dict) -> tuple[str, str]:
    """``(pip install line, preload python)`` of a generated function's image build."""
    steps = [step["value"] for step in config["spec"]["build"]["directives"]["postCopy"]]
    [pip] = [step for step in steps if step.startswith("pip install")]
    [preload] = [step for step in steps if step.startswith("python -c")]
    return pip, preload.removeprefix('python -c "').removesuffix('"')


def _preloaded(preload: str) -> list[tuple[str, str]]:
    """Run the build's preload line against recorders: which models it would download."""
    calls = []
    names = {
        "load_detector": lambda spec, device: calls.append(("detector", spec)),
        "load_segmenter": lambda spec, device: calls.append(("segmenter", spec)),
        "load_tracker": lambda spec, device: calls.append(("tracker", spec)),
    }
    exec(preload.split("; ", 1)[1], names)  # after the import of gsam2.core.models
    return calls


@pytest.mark.parametrize(
    ("options", "env", "pip", "preloads"),
    [
        (["--detector", "florence2", "--task", "object_detection"],
         {"GSAM2_DETECTOR": "florence2", "GSAM2_TASK": "object_detection"}, "./gsam2-src",
         [("detector", "florence2"), ("segmenter", "facebook/sam2.1-hiera-tiny")]),
        (["--detector", "sam3"], {"GSAM2_DETECTOR": "sam3"}, "./gsam2-src", [("detector", "sam3")]),
        (["--detector", "owlv2", "--slice-size", "640"], {"GSAM2_DETECTOR": "owlv2", "GSAM2_SLICE_SIZE": "640"},
         "./gsam2-src", [("detector", "owlv2"), ("segmenter", "facebook/sam2.1-hiera-tiny")]),
        (["--detector", "dinox"], {"GSAM2_DETECTOR": "dinox"}, "'./gsam2-src[cloud]'",
         [("segmenter", "facebook/sam2.1-hiera-tiny")]),
    ],
)
def test_generated_detector_for_another_backend(tmp_path, options, env, pip, preloads):
    from gsam2.nuclio.functions import main

    assert main([str(tmp_path), "--name", "custom", *options]) == 0
    for file in ("function.yaml", "function-gpu.yaml"):
        config = yaml.safe_load((tmp_path / "custom" / file).read_text())
        variables = {item["name"]: item["value"] for item in config["spec"]["env"]}
        assert {name: variables.get(name) for name in env} == env
        assert "DDS_API_TOKEN" not in variables, "a token is never written into a function file"
        pip_line, preload = _build_steps(config)
        assert pip_line == f"pip install --no-cache-dir {pip}"
        assert _preloaded(preload) == preloads
        assert len(json.loads(config["metadata"]["annotations"]["spec"])) == 80


def test_deploy_script_passes_the_cloud_token_only_from_the_environment(tmp_path):
    import os
    import subprocess

    from gsam2.nuclio.functions import main

    assert main([str(tmp_path / "fn"), "--name", "dinox-detector", "--detector", "dinox"]) == 0
    log = tmp_path / "nuctl.log"
    fake = tmp_path / "bin" / "nuctl"
    fake.parent.mkdir()
    fake.write_text(f'#!/usr/bin/env bash\n[[ "$1" == deploy ]] && printf "%s\\n" "$@" >> {log}\nexit 0\n')
    fake.chmod(0o755)
    deploy = REPO_ROOT / "nuclio" / "deploy.sh"
    base = {key: value for key, value in os.environ.items() if key != "DDS_API_TOKEN"}
    base["PATH"] = f"{fake.parent}:{os.environ['PATH']}"
    for token in (None, "secret-token"):
        log.unlink(missing_ok=True)
        env = dict(base, DDS_API_TOKEN=token) if token else base
        result = subprocess.run(["bash", str(deploy), str(tmp_path / "fn" / "dinox-detector")],
                                capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        arguments = log.read_text().splitlines()
        assert ("DDS_API_TOKEN=secret-token" in arguments) == bool(token)
        assert not any("DDS_API_TOKEN" in argument for argument in arguments if not token)
