"""Generate the deployable Nuclio function folders (``function.yaml``, ``function-gpu.yaml``, ``main.py``).

    python -m gsam2.nuclio.functions OUTDIR                      # all three, COCO labels
    python -m gsam2.nuclio.functions OUTDIR --labels labels.txt --name my-detector   # your vocabulary
    python -m gsam2.nuclio.functions OUTDIR --name florence-od --detector florence2 --task object_detection
    python -m gsam2.nuclio.functions OUTDIR --name dinox-detector --detector dinox   # DDS_API_TOKEN at deploy

The folders under ``nuclio/functions/`` in the repository are this command's
output (a test keeps them in sync). ``nuclio/deploy.sh`` deploys them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..core import DEFAULT_DETECTOR, DEFAULT_SEGMENTER
from ..core.models import parse_detector_spec
from .detector import label_types
from .protocol import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_RESPONSE_MB

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
        "preload": f"load_detector({DEFAULT_DETECTOR!r}, device='cpu'); load_segmenter({DEFAULT_SEGMENTER!r}, device='cpu')",
        "timeout": "120s",
    },
    "sam2-interactor": {
        "title": "SAM 2",
        "type": "interactor",
        "module": "interactor",
        "help": "Click inside the object (left) or outside it (right), or start with a box",
        # The text-prompt path grounds with the default detector, loaded on first use.
        "preload": f"load_segmenter({DEFAULT_SEGMENTER!r}, device='cpu'); load_detector({DEFAULT_DETECTOR!r}, device='cpu')",
        "timeout": "30s",
    },
    "sam2-tracker": {
        "title": "SAM 2",
        "type": "tracker",
        "module": "tracker",
        "help": "Tracks rectangles and polygons with SAM 2's video memory",
        "preload": f"load_tracker({DEFAULT_SEGMENTER!r}, device='cpu')",
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


@dataclass(frozen=True)
class DetectorChoice:
    """The detector a generated detector function runs (its ``GSAM2_*`` environment)."""

    detector: str = DEFAULT_DETECTOR
    task: str | None = None
    slice_size: int | None = None
    label_type: str = "mask"

    @property
    def backend(self) -> str:
        return parse_detector_spec(self.detector)[0]

    def env(self) -> list[dict[str, str]]:
        if (self.detector, self.task, self.slice_size) == (DEFAULT_DETECTOR, None, None):
            return []
        env = [{"name": "GSAM2_DETECTOR", "value": self.detector}]
        if self.task:
            env.append({"name": "GSAM2_TASK", "value": self.task})
        if self.slice_size:
            env.append({"name": "GSAM2_SLICE_SIZE", "value": str(self.slice_size)})
        return env

    def pip_target(self) -> str:
        """What the image installs: the repository, with the extra its backend needs."""
        extra = {"dds-cloud": "cloud", "groundingdino-original": "groundingdino-original"}.get(self.backend)
        return f"./gsam2-src[{extra}]" if extra else "./gsam2-src"

    def preload(self) -> str:
        """Python that downloads the weights into the image at build time."""
        segmenter = f"load_segmenter({DEFAULT_SEGMENTER!r}, device='cpu')"
        if self.backend in ("dds-cloud", "groundingdino-original"):
            # The cloud has nothing to download (and no token at build time);
            # a local .pth must be mounted into the function, not baked in.
            return segmenter
        detector = f"load_detector({self.detector!r}, device='cpu')"
        return detector if self.backend == "sam3" else f"{detector}; {segmenter}"


def function_config(
    kind: str,
    gpu: bool,
    name: str | None = None,
    labels: list[str] | None = None,
    detector: DetectorChoice | None = None,
) -> dict:
    info = FUNCTIONS[kind]
    detector = detector or DetectorChoice()
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
        # The function's own limits (nuclio/protocol.py), written out so that they can be changed here.
        {"name": "GSAM2_MAX_IMAGE_PIXELS", "value": str(DEFAULT_MAX_IMAGE_PIXELS)},
        {"name": "GSAM2_MAX_RESPONSE_MB", "value": f"{DEFAULT_MAX_RESPONSE_MB:g}"},
    ]
    preload, pip_target = info["preload"], "./gsam2-src"
    if info["type"] == "detector":
        env += detector.env()
        preload, pip_target = detector.preload(), detector.pip_target()
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
                    {"kind": "RUN", "value": f"pip install --no-cache-dir {shlex.quote(pip_target)}"},
                    # weights baked into the image: the first request is not a download
                    {"kind": "RUN", "value": 'python -c "from gsam2.core.models import *; ' + preload + '"'},
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

from gsam2.nuclio.{module} import handler, init_context  # noqa: F401
'''


def write_function(
    outdir: Path,
    kind: str,
    name: str | None = None,
    labels: list[str] | None = None,
    detector: DetectorChoice | None = None,
) -> Path:
    folder = outdir / (name or kind)
    folder.mkdir(parents=True, exist_ok=True)
    for gpu, filename in ((False, "function.yaml"), (True, "function-gpu.yaml")):
        text = yaml.safe_dump(function_config(kind, gpu, name, labels, detector), sort_keys=False, width=120)
        (folder / filename).write_text(text)
    (folder / "main.py").write_text(MAIN_PY.format(module=FUNCTIONS[kind]["module"]))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", help="folder to write the function folders into")
    parser.add_argument("--labels", help="text file with one label per line: a detector with that vocabulary only")
    parser.add_argument("--name", help="function name for the custom detector (default grounded-sam2-detector)")
    parser.add_argument(
        "--detector",
        help="the custom detector's backend or checkpoint, as gsam2 image --detector takes it "
        "(florence2, owlv2, sam3, dinox, a hub id, ...; default: Grounding DINO tiny)",
    )
    parser.add_argument("--task", help="Florence-2 task of the custom detector (with --detector florence2)")
    parser.add_argument("--slice-size", type=int, help="sliced inference over tiles of this many pixels")
    parser.add_argument(
        "--rectangles",
        action="store_true",
        help="the custom detector answers with boxes (label type 'rectangle') instead of masks",
    )
    args = parser.parse_args(argv)
    outdir = Path(args.outdir)
    custom = args.labels or args.detector or args.task or args.slice_size or args.rectangles
    if custom:
        labels = None
        if args.labels:
            labels = [line.strip() for line in Path(args.labels).read_text().splitlines() if line.strip()]
        detector = DetectorChoice(
            args.detector or DEFAULT_DETECTOR, args.task, args.slice_size, "rectangle" if args.rectangles else "mask"
        )
        try:
            print(write_function(outdir, "grounded-sam2-detector", args.name, labels, detector))
        except ValueError as error:
            parser.error(str(error))
    else:
        for kind in FUNCTIONS:
            print(write_function(outdir, kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
