"""The CVAT Nuclio functions, called exactly as Nuclio calls them, with the JSON CVAT sends."""

from __future__ import annotations

import base64
import io
import json
import os
import numpy as np
import pytest
import yaml
from PIL import Image

from gsam2.core import ground_and_segment, load_detector, load_segmenter
from gsam2.nuclio.handlers import detector, interactor, tracker
from gsam2.nuclio.generate import FUNCTIONS, function_config, write_function

from .conftest import REPO_ROOT, shapes_image
from .nuclio_harness import invoke, make_context

FUNCTIONS_DIR = REPO_ROOT / "nuclio" / "serverless"


def call(module, context, payload):
    return invoke(module, context, payload)


def b64(image: np.ndarray, fmt="PNG") -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


IMAGE = shapes_image(90, 120)


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
        assert {"label", "type", "mask", "confidence", "attributes"} <= set(item) <= {*item, "points"}
        assert item["label"] in {"Car", "person"}, "label names come from the spec, as written there"
        assert item["type"] == "mask" and isinstance(item["confidence"], str) and item["attributes"] == []
        assert 0 <= float(item["confidence"]) <= 1
        if "points" in item:  # only polygons CVAT accepts (3+ vertices) are sent
            assert len(item["points"]) >= 6 and len(item["points"]) % 2 == 0
        np.testing.assert_array_equal(decode_cvat_mask(item, 90, 120), mask)


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
        ({"image": b64(IMAGE), "threshold": 700}, "fraction (0-1) or a percentage (0-100)"),
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


def test_interactor_caches_the_image_embedding_across_clicks(interactor_context, monkeypatch):
    embeds = []
    segmenter = interactor_context.user_data.segmenter
    real = segmenter.embed
    monkeypatch.setattr(segmenter, "embed", lambda images: embeds.append(1) or real(images))
    image = b64(IMAGE)
    for clicks in ([[30, 40]], [[30, 40], [50, 20]]):
        status, body = call(
            interactor,
            interactor_context,
            {"image": image, "pos_points": clicks, "neg_points": [[5, 5]], "obj_bbox": []},
        )
        assert status == 200, body
        assert set(body) == {"mask"} and np.array(body["mask"]).shape == (90, 120)
    assert embeds == [1], "the second click reuses the cached embedding"


@pytest.fixture
def tracker_context(models_env):
    models_env.setenv("GSAM2_TRACKER_MAX_OBJECTS", "2")
    context = make_context()
    tracker.init_context(context)
    return context


def test_tracker_memory_is_bounded(tracker_context):
    for _ in range(3):
        call(tracker, tracker_context, {"image": b64(IMAGE), "shapes": [[10, 10, 50, 40]], "states": []})
    assert len(tracker_context.user_data.memories) == 2


def boxes(count: int) -> list[list[int]]:
    return [[5 + 10 * (k % 8), 5 + 20 * (k // 8), 15 + 10 * (k % 8), 20 + 20 * (k // 8)] for k in range(count)]


def test_tracker_encodes_each_frame_once_for_all_objects(models_env, monkeypatch):
    context = make_context()
    tracker.init_context(context)
    model = context.user_data.tracker.model
    passes = []
    real = model.get_image_features
    monkeypatch.setattr(model, "get_image_features", lambda *a, **k: passes.append(1) or real(*a, **k))
    status, body = call(tracker, context, {"image": b64(IMAGE), "shapes": boxes(8), "states": []})
    assert status == 200 and len(passes) == 1, "8 objects started on a frame: one image-encoder pass"
    next_frame = b64(np.roll(IMAGE, 2, axis=1))
    status, body = call(tracker, context, {"image": next_frame, "shapes": [None] * 8, "states": body["states"]})
    assert status == 200 and len(passes) == 2, "8 objects tracked onto a frame: one more pass"
    status, _ = call(tracker, context, {"image": next_frame, "shapes": boxes(2), "states": []})
    assert status == 200 and len(passes) == 2, "another request for the same frame reuses the pass"
    for token in [state["token"] for state in body["states"]]:
        memory = context.user_data.memories.get(token)
        assert len(memory.session.session.processed_frames) == 2 and not dict(memory.session.session.processed_frames)
        assert not memory.session.session.cache._vision_features, "no object holds a copy of the frame's features"


def test_tracker_cap_is_by_memory_and_overflow_does_not_cascade(models_env):
    context = make_context()
    tracker.init_context(context)
    _, body = call(tracker, context, {"image": b64(IMAGE), "shapes": boxes(1), "states": []})
    one = context.user_data.memories.weight
    assert 0 < one < 8 * 2**20, "an object's SAM 2 memory at this size is small"
    # Room for about four objects; six arrive.
    memories = context.user_data.memories
    memories.max_weight = 4.5 * one
    _, body = call(tracker, context, {"image": b64(IMAGE), "shapes": boxes(6), "states": []})
    for shift in range(1, 6):
        tokens = [state["token"] for state in body["states"]]
        held = sum(token in memories for token in tokens)
        assert 1 <= held < 6, "the cap holds some of the six, never none"
        frame = b64(np.roll(IMAGE, shift, axis=1))
        status, body = call(tracker, context, {"image": frame, "shapes": [None] * 6, "states": body["states"]})
        assert status == 200
        restarted = sum(old != state["token"] for old, state in zip(tokens, body["states"]))
        assert restarted == 6 - held, "only the objects that did not fit restart: evictions do not cascade"


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
from gsam2.nuclio.handlers import detector

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
        # REPO_ROOT for `tests`; the PYTHONPATH given stays, as it may be where `gsam2` is found
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))},
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
                # a box alone works, so the UI may offer "start with a box" and ask for no click
                assert annotations["startswith_box_optional"] == "true" and annotations["min_pos_points"] == "0"
            if annotations["type"] == "tracker":
                assert annotations["supported_shape_types"] == "rectangle,polygon"
            trigger = committed["spec"]["triggers"]["myHttpTrigger"]
            assert trigger["numWorkers"] == 1 and "maxWorkers" not in trigger, "maxWorkers is deprecated"
        assert "handler" in (FUNCTIONS_DIR / kind / "main.py").read_text()


def test_custom_label_file_makes_a_detector(tmp_path):
    from gsam2.nuclio.generate import main

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
    projects = tmp_path / "projects.log"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        # Nuclio's local platform: `get project` fails until the project is created.
        f'if [[ "$1 $2" == "get project" ]]; then grep -qx "$3" {projects} 2>/dev/null; exit $?; fi\n'
        f'if [[ "$1 $2" == "create project" ]]; then echo "$3" >> {projects}; echo "create $*" >> {log}; exit 0; fi\n'
        'if [[ "$1" == deploy ]]; then\n'
        f'  grep -qx cvat {projects} 2>/dev/null || {{ echo "Project does not exist" >&2; exit 1; }}\n'
        '  path=""; prev=""; for a in "$@"; do [[ "$prev" == --path ]] && path="$a"; prev="$a"; done\n'
        f'  echo "$* :: $(cd "$path" && ls main.py function.yaml gsam2-src/pyproject.toml | tr "\\n" " ")" >> {log}\n'
        "fi\n"
    )
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}")
    deploy = REPO_ROOT / "nuclio" / "deploy.sh"
    for _ in range(2):  # a CVAT with no function deployed yet, then again: the project is created once
        result = subprocess.run(["bash", str(deploy), "--gpu"], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == "create create project cvat --platform local", "the project exists before the first deploy"
    assert sum(line.startswith("create") for line in lines) == 1
    lines = [line for line in lines if not line.startswith("create")]
    assert len(lines) == 2 * len(FUNCTIONS)
    for line in lines:
        assert "--project-name cvat" in line and "--platform local" in line
        staged = set(line.split(" :: ")[1].split())
        assert staged == {"main.py", "function.yaml", "gsam2-src/pyproject.toml"}


def _build_steps(config: dict) -> tuple[str, str]:
    """``(pip install line, preload python)`` of a generated function's image build."""
    import shlex

    steps = [step["value"] for step in config["spec"]["build"]["directives"]["postCopy"]]
    [pip] = [step for step in steps if step.startswith("pip install") and "gsam2-src" in step]
    [preload] = [step for step in steps if step.startswith("python -c")]
    [_, _, code] = shlex.split(preload)
    return pip, code


def _preloaded(preload: str, monkeypatch) -> list[tuple[str, str]]:
    """Run the build's preload line against recorders: which models it would download."""
    import types

    import gsam2.core.run as run_module

    calls = []

    def detector(spec, device, **options):
        calls.append(("detector", spec))
        return types.SimpleNamespace(produces_masks=spec == "sam3", device=device)

    monkeypatch.setattr(run_module, "load_detector", detector)
    monkeypatch.setattr(run_module, "load_segmenter", lambda spec, device: calls.append(("segmenter", spec)))
    monkeypatch.setattr(run_module, "load_tracker", lambda spec, device: calls.append(("tracker", spec)))
    exec(preload, {})
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
        (["--segmenter", "facebook/sam2.1-hiera-large", "--slice-size", "512", "--slice-overlap", "64"],
         {"GSAM2_SEGMENTER": "facebook/sam2.1-hiera-large", "GSAM2_SLICE_SIZE": "512", "GSAM2_SLICE_OVERLAP": "64"},
         "./gsam2-src", [("detector", "IDEA-Research/grounding-dino-tiny"), ("segmenter", "facebook/sam2.1-hiera-large")]),
        (["--detector", "mm-grounding-dino", "--text-threshold", "0.2"],
         {"GSAM2_DETECTOR": "mm-grounding-dino", "GSAM2_TEXT_THRESHOLD": "0.2"}, "./gsam2-src",
         [("detector", "mm-grounding-dino"), ("segmenter", "facebook/sam2.1-hiera-tiny")]),
        (["--kind", "sam2-tracker", "--tracker", "edgetam"], {"GSAM2_TRACKER": "edgetam"}, "./gsam2-src",
         [("tracker", "edgetam")]),
        (["--kind", "sam2-interactor", "--segmenter", "large"], {"GSAM2_SEGMENTER": "large"}, "./gsam2-src",
         [("segmenter", "large"), ("detector", "IDEA-Research/grounding-dino-tiny")]),
    ],
)
def test_generated_detector_for_another_backend(tmp_path, monkeypatch, options, env, pip, preloads):
    from gsam2.nuclio.generate import main

    assert main([str(tmp_path), "--name", "custom", *options]) == 0
    for file in ("function.yaml", "function-gpu.yaml"):
        config = yaml.safe_load((tmp_path / "custom" / file).read_text())
        variables = {item["name"]: item["value"] for item in config["spec"]["env"]}
        assert {name: variables.get(name) for name in env} == env
        assert "DDS_API_TOKEN" not in variables, "a token is never written into a function file"
        pip_line, preload = _build_steps(config)
        assert pip_line == f"pip install --no-cache-dir {pip}"
        assert _preloaded(preload, monkeypatch) == preloads
        if config["metadata"]["annotations"]["type"] == "detector":
            assert len(json.loads(config["metadata"]["annotations"]["spec"])) == 80


@pytest.mark.parametrize("kind", list(FUNCTIONS))
def test_a_generated_functions_environment_is_its_run_spec(tmp_path, kind):
    """function.yaml's env, read by the handler's RunSpec.from_env, gives back the spec it was generated from."""
    from gsam2.core.spec import RunSpec
    from gsam2.nuclio.generate import main

    settings = {"detector": "owlv2", "slice_size": 640, "slice_overlap": 96, "segmenter": "facebook/sam2.1-hiera-large",
                "text_threshold": 0.2, "box_threshold": 0.3, "tracker": "edgetam", "batch_size": 2}
    spec = RunSpec.build(**settings)
    assert main([str(tmp_path), "--kind", kind, "--name", "custom", "--spec-json", json.dumps(settings)]) == 0
    for file, device in (("function.yaml", "cpu"), ("function-gpu.yaml", "cuda")):
        config = yaml.safe_load((tmp_path / "custom" / file).read_text())
        environ = {item["name"]: item["value"] for item in config["spec"]["env"]}
        assert RunSpec.from_env(environ) == spec.replace(device=device)
    # The options win over the JSON; a wrong value is the generator's usage error, in its spelling.
    assert main([str(tmp_path), "--name", "o", "--spec-json", json.dumps(settings), "--slice-overlap", "32"]) == 0
    environ = {item["name"]: item["value"]
               for item in yaml.safe_load((tmp_path / "o" / "function.yaml").read_text())["spec"]["env"]}
    assert RunSpec.from_env(environ).slice_overlap == 32
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--slice-size", "64", "--slice-overlap", "64"])


def test_deploy_script_passes_the_cloud_token_only_from_the_environment(tmp_path):
    import os
    import subprocess

    from gsam2.nuclio.generate import main

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


@pytest.mark.parametrize("module", [detector, interactor, tracker])
def test_a_bad_setting_fails_at_init_naming_the_variable(models_env, tmp_path, module):
    """The handlers build their run from RunSpec.from_env: a wrong value is one line at deployment, not per request."""
    folder = write_function(tmp_path, "grounded-sam2-detector", "bad", ["car"])
    models_env.setenv("GSAM2_FUNCTION_CONFIG", str(folder / "function.yaml"))
    models_env.setenv("GSAM2_SLICE_SIZE", "512")
    models_env.setenv("GSAM2_SLICE_OVERLAP", "600")
    with pytest.raises(ValueError) as raised:
        module.init_context(make_context())
    message = str(raised.value)
    assert "\n" not in message and message.startswith("GSAM2_SLICE_OVERLAP 600:") and "512" in message


def test_detector_function_runs_the_environments_spec(models_env, tmp_path):
    """Slicing with its overlap, the text threshold and the box threshold's default come from the environment."""
    folder = write_function(tmp_path, "grounded-sam2-detector", "sliced", ["car", "person"])
    models_env.setenv("GSAM2_FUNCTION_CONFIG", str(folder / "function.yaml"))
    for name, value in {"GSAM2_SLICE_SIZE": "64", "GSAM2_SLICE_OVERLAP": "16", "GSAM2_TEXT_THRESHOLD": "0",
                        "GSAM2_BOX_THRESHOLD": "0"}.items():
        models_env.setenv(name, value)
    context = make_context()
    detector.init_context(context)
    spec = context.user_data.run.spec
    assert (spec.slice_size, spec.slice_overlap, spec.text_threshold, spec.box_threshold) == (64, 16, 0.0, 0.0)
    assert "Sliced" in type(context.user_data.detector).__name__
    status, body = call(detector, context, {"image": b64(IMAGE)})
    assert status == 200 and body, "threshold 0 from GSAM2_BOX_THRESHOLD: every tile's boxes come back"


def test_tracker_function_with_edgetam(models_env, tiny_models):
    models_env.setenv("GSAM2_TRACKER", f"edgetam:{tiny_models['edgetam-video']}")
    context = make_context()
    tracker.init_context(context)
    status, body = call(tracker, context, {"image": b64(IMAGE), "shapes": [[10, 10, 50, 40]], "states": []})
    assert status == 200, body
    next_frame = b64(np.roll(IMAGE, 2, axis=1))
    status, body = call(tracker, context, {"image": next_frame, "shapes": [None], "states": body["states"]})
    assert status == 200 and len(body["shapes"]) == 1, body
