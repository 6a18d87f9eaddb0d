"""Generate the deployable Nuclio function folders (``function.yaml``, ``function-gpu.yaml``, ``main.py``).

    python -m gsam2.nuclio.generate OUTDIR                      # all three, COCO labels
    python -m gsam2.nuclio.generate OUTDIR --labels labels.txt --name my-detector   # your vocabulary
    python -m gsam2.nuclio.generate OUTDIR --name florence-od --detector florence2 --task object_detection
    python -m gsam2.nuclio.generate OUTDIR --name dinox-detector --detector dinox   # DDS_API_TOKEN at deploy
    python -m gsam2.nuclio.generate OUTDIR --name sliced --slice-size 640 --slice-overlap 128 --segmenter large
    python -m gsam2.nuclio.generate OUTDIR --kind sam2-tracker --name edgetam-tracker --tracker edgetam
    python -m gsam2.nuclio.generate OUTDIR --name custom --spec-json '{"detector": "owlv2", "text_threshold": 0.2}'

A function's run is a :class:`~gsam2.core.spec.RunSpec`: the generator writes
``spec.to_env()`` (``GSAM2_DETECTOR``, ``GSAM2_SLICE_OVERLAP``,
``GSAM2_SEGMENTER``, ...) into the function's environment, where the handler's
``RunSpec.from_env()`` reads it back, and bakes that spec's own models into the
image.

The folders under ``nuclio/serverless/`` in the repository are this command's
output (a test keeps them in sync). ``nuclio/deploy.sh`` deploys them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..core.backends import parse_detector_spec
from ..core.spec import RunSpec, SettingError, cli_name
from .handlers.detector import label_types
from .handlers.protocol import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_RESPONSE_MB

# COCO's 80 classes: a useful default vocabulary for the detector.
COCO_LABELS = (
    "person,bicycle,car,motorcycle,airplane,bus,train,truck,boat,traffic light,fire hydrant,stop sign,"
    "parking meter,bench,bird,cat,dog,horse,sheep,cow,elephant,bear,zebra,giraffe,backpack,umbrella,handbag,"
    "tie,suitcase,frisbee,skis,snowboard,sports ball,kite,baseball bat,baseball glove,skateboard,surfboard,"
    "tennis racket,bottle,wine glass,cup,fork,knife,spoon,bowl,banana,apple,sandwich,orange,broccoli,carrot,"
    "hot dog,pizza,donut,cake,chair,couch,potted plant,bed,dining table,toilet,tv,laptop,mouse,remote,"
    "keyboard,cell phone,microwave,oven,toaster,sink,refrigerator,book,clock,vase,scissors,teddy bear,"
    "hair drier,toothbrush"
).split(",")

CPU_IMAGE = "python:3.11-slim"
# The GPU image's torch must satisfy pyproject's floor and the installed
# transformers' own minimum (transformers 5 disables PyTorch below 2.6), or
# `pip install` keeps the image's torch and the build's preload step fails.
# tests/test_nuclio_build.py checks the three against each other.
GPU_IMAGE = "pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime"
# The CPU image gets PyTorch's CPU wheels first: the default wheel carries CUDA (several GB).
CPU_TORCH_INSTALL = "pip install --no-cache-dir torch torchvision --index-url https://download.pytorch.org/whl/cpu"

FUNCTIONS = {
    "grounded-sam2-detector": {
        "title": "Grounded SAM 2",
        "type": "detector",
        "module": "detector",
        "help": "Text-prompted detection (Grounding DINO) with SAM 2 masks; its labels are the prompt",
        "timeout": "120s",
    },
    "sam2-interactor": {
        "title": "SAM 2",
        "type": "interactor",
        "module": "interactor",
        "help": "Click inside the object (left) or outside it (right), or start with a box",
        "timeout": "30s",
    },
    "sam2-tracker": {
        "title": "SAM 2",
        "type": "tracker",
        "module": "tracker",
        "help": "Tracks rectangles and polygons with SAM 2's video memory",
        "timeout": "30s",
    },
}


def detector_spec(labels: list[str], label_type: str = "mask") -> str:
    """CVAT's label spec. ``label_type`` is what the detector answers with: ``mask`` or ``rectangle``."""
    names = [label.strip() for label in labels if label.strip()]
    if len(set(names)) != len(names):
        raise ValueError("label names must be unique")
    if not names:
        raise ValueError("give at least one label")
    spec = [{"id": i, "name": name, "type": label_type} for i, name in enumerate(names)]
    label_types(spec)  # the handler's own checks (labels that differ only in case, known types)
    return json.dumps(spec, indent=1)


#: The settings that name what a function's image downloads at build time.
MODEL_SETTINGS = ("detector", "task", "slice_size", "slice_overlap", "segmenter", "tracker")


@dataclass(frozen=True)
class DetectorChoice:
    """How a generated detector function answers (``label_type``: ``mask`` or ``rectangle``) and the run it serves."""

    label_type: str = "mask"
    spec: RunSpec = field(default_factory=RunSpec)


def detector_backend(spec: RunSpec) -> str:
    return parse_detector_spec(spec.detector)[0]


def pip_target(spec: RunSpec) -> str:
    """What the image installs: the repository, with the extra its detector's backend needs."""
    extra = {"dds-cloud": "cloud", "groundingdino-original": "groundingdino-original"}.get(detector_backend(spec))
    return f"./gsam2-src[{extra}]" if extra else "./gsam2-src"


def preload(kind: str, spec: RunSpec) -> str:
    """Python that downloads the spec's own models into the image at build time (on the build's CPU).

    The cloud detector has nothing to download (and no token at build time); a
    local ``.pth`` must be mounted into the function, not baked in: for those only
    SAM 2 is preloaded.
    """
    settings = {name: getattr(spec, name) for name in MODEL_SETTINGS if getattr(spec, name) != getattr(RunSpec, name)}
    build = f"run = Run(RunSpec.build(**{json.dumps({**settings, 'device': 'cpu'})}))"
    detector_loads = detector_backend(spec) not in ("dds-cloud", "groundingdino-original")
    role = FUNCTIONS[kind]["type"]
    if role == "tracker":
        load = "run.video_tracker"
    elif role == "interactor":  # clicks; text prompts ground with the detector
        load = "run.image_segmenter; run.detector" if detector_loads else "run.image_segmenter"
    else:
        load = "run.load_for_images()" if detector_loads else "run.image_segmenter"
    return f"from gsam2.core.run import Run; from gsam2.core.spec import RunSpec; {build}; {load}"


def function_config(
    kind: str,
    gpu: bool,
    name: str | None = None,
    labels: list[str] | None = None,
    detector: DetectorChoice | None = None,
    spec: RunSpec | None = None,
) -> dict:
    """A function's ``function.yaml``; ``spec``, else ``detector.spec``, is the run it serves."""
    info = FUNCTIONS[kind]
    detector = detector or DetectorChoice()
    spec = spec or detector.spec
    annotations = {"name": info["title"], "type": info["type"], "help_message": info["help"]}
    if info["type"] == "detector":
        annotations["spec"] = detector_spec(labels or COCO_LABELS, detector.label_type)
    if info["type"] == "interactor":
        # Nuclio annotations are strings; CVAT parses them (LambdaFunction.__init__ in
        # cvat/apps/lambda_manager/views.py). A box alone is enough, so no click is required;
        # startswith_box_optional makes the UI offer "start with a box".
        annotations.update(version="2", min_pos_points="0", min_neg_points="0", startswith_box_optional="true")
    if info["type"] == "tracker":
        # With this annotation CVAT sends and expects {"type", "points"} shapes and lets
        # polygons through (views.py, prepare_shape); without it, rectangles only.
        annotations["supported_shape_types"] = "rectangle,polygon"
    env = [
        {"name": "GSAM2_DEVICE", "value": "cuda" if gpu else "cpu"},
        {"name": "HF_HOME", "value": "/opt/hf"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        # The function's own limits (nuclio/handlers/protocol.py), written out so that they can be changed here.
        {"name": "GSAM2_MAX_IMAGE_PIXELS", "value": str(DEFAULT_MAX_IMAGE_PIXELS)},
        {"name": "GSAM2_MAX_RESPONSE_MB", "value": f"{DEFAULT_MAX_RESPONSE_MB:g}"},
    ]
    # The run: RunSpec.from_env() in the handler reads back exactly this (no token: it is given at deploy).
    # The device is the flavour's (GSAM2_DEVICE above).
    env += [{"name": name, "value": value} for name, value in spec.to_env().items() if name != "GSAM2_DEVICE"]
    spec = {
        "description": info["help"],
        "runtime": "python:3.11",
        "handler": "main:handler",
        "eventTimeout": info["timeout"],
        "env": env,
        "build": {
            "image": f"cvat.gsam2.{name or kind}{'.gpu' if gpu else ''}",
            "baseImage": GPU_IMAGE if gpu else CPU_IMAGE,
            "directives": {
                "preCopy": [
                    {"kind": "ENV", "value": "HF_HOME=/opt/hf"},
                    {"kind": "WORKDIR", "value": "/opt/nuclio"},
                ],
                "postCopy": [
                    *([] if gpu else [{"kind": "RUN", "value": CPU_TORCH_INSTALL}]),
                    # deploy.sh puts the repository next to main.py as gsam2-src/
                    {"kind": "RUN", "value": f"pip install --no-cache-dir {shlex.quote(pip_target(spec))}"},
                    # the spec's weights baked into the image: the first request is not a download
                    {"kind": "RUN", "value": f"python -c {shlex.quote(preload(kind, spec))}"},
                ],
            },
        },
        "triggers": {
            "myHttpTrigger": {
                "kind": "http",
                "numWorkers": 1,
                "workerAvailabilityTimeoutMilliseconds": 10000,
                "attributes": {"maxRequestBodySize": 33554432},
            }
        },
        "platform": {
            "attributes": {"restartPolicy": {"name": "always", "maximumRetryCount": 3}, "mountMode": "volume"}
        },
    }
    if gpu:
        spec["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    return {
        "metadata": {"name": f"gsam2-{name or kind}", "namespace": "cvat", "annotations": annotations},
        "spec": spec,
    }


MAIN_PY = '''"""Nuclio entry point: CVAT calls init_context once per worker, then handler per request."""

from gsam2.nuclio.handlers.{module} import handler, init_context  # noqa: F401
'''


def write_function(
    outdir: Path,
    kind: str,
    name: str | None = None,
    labels: list[str] | None = None,
    detector: DetectorChoice | None = None,
    spec: RunSpec | None = None,
) -> Path:
    folder = outdir / (name or kind)
    folder.mkdir(parents=True, exist_ok=True)
    for gpu, filename in ((False, "function.yaml"), (True, "function-gpu.yaml")):
        text = yaml.safe_dump(function_config(kind, gpu, name, labels, detector, spec), sort_keys=False, width=120)
        (folder / filename).write_text(text)
    (folder / "main.py").write_text(MAIN_PY.format(module=FUNCTIONS[kind]["module"]))
    return folder


#: The run settings the generator takes as options (``--slice-overlap``); ``--spec-json`` takes any.
SPEC_OPTIONS = {
    "detector": (str, "the detector's backend or checkpoint, as gsam2 image --detector takes it (florence2, owlv2, "
                 "mm-grounding-dino, sam3, dinox, a hub id, ...; default: Grounding DINO tiny)"),
    "task": (str, "Florence-2's task (with --detector florence2)"),
    "slice_size": (int, "sliced inference over tiles of this many pixels"),
    "slice_overlap": (int, "overlap of the tiles in pixels (with --slice-size)"),
    "segmenter": (str, "SAM 2 image checkpoint (hub id, folder or size name)"),
    "tracker": (str, "the tracker function's video tracker: a SAM 2 checkpoint or edgetam[:CHECKPOINT]"),
    "box_threshold": (float, "the box threshold (the detector's default when CVAT sends none; text prompts)"),
    "text_threshold": (float, "the text threshold"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", help="folder to write the function folders into")
    parser.add_argument("--labels", help="text file with one label per line: a detector with that vocabulary only")
    parser.add_argument("--name", help="function name for the custom function (default: its kind's name)")
    parser.add_argument(
        "--kind", choices=list(FUNCTIONS), default="grounded-sam2-detector",
        help="which function the options make (default grounded-sam2-detector)",
    )
    for setting, (kind, text) in SPEC_OPTIONS.items():
        parser.add_argument(cli_name(setting), type=kind, help=text)
    parser.add_argument("--spec-json", help="the run's settings as JSON (RunSpec.to_dict's keys); options win over it")
    parser.add_argument(
        "--rectangles",
        action="store_true",
        help="the custom detector answers with boxes (label type 'rectangle') instead of masks",
    )
    args = parser.parse_args(argv)
    outdir = Path(args.outdir)
    options = {setting: getattr(args, setting) for setting in SPEC_OPTIONS if getattr(args, setting) is not None}
    custom = args.labels or options or args.spec_json or args.rectangles or args.kind != "grounded-sam2-detector"
    if custom:
        try:
            settings = json.loads(args.spec_json) if args.spec_json else {}
        except json.JSONDecodeError as error:
            parser.error(f"--spec-json: not JSON: {error}")
        if not isinstance(settings, dict):
            parser.error("--spec-json: give a JSON object of settings")
        try:
            spec = RunSpec.from_dict({**settings, **options})
        except SettingError as error:
            parser.error(error.spelled(cli_name))
        labels = None
        if args.labels:
            labels = [line.strip() for line in Path(args.labels).read_text().splitlines() if line.strip()]
        detector = DetectorChoice("rectangle" if args.rectangles else "mask", spec)
        try:
            print(write_function(outdir, args.kind, args.name, labels, detector))
        except ValueError as error:
            parser.error(str(error))
    else:
        for kind in FUNCTIONS:
            print(write_function(outdir, kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
