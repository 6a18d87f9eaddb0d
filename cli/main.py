"""The ``gsam2`` parser and entry point: one sub-command per job, SIGTERM stops like Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from ..core import DEFAULT_SEGMENTER
from ..core.formats import VIDEO_FORMATS
from ..core.backends import tracker_choices
from ..core.spec import DEFAULT_IOU_THRESHOLD, DEFAULT_STEP
from .console import stopped_status, terminate
from .cvat import run_cvat
from .eval import add_eval_command
from .image import run_autolabel, run_image
from .options import (
    add_end_after_option,
    add_format_option,
    add_image_file_options,
    add_model_options,
    add_threshold_options,
    add_ray_options,
    non_negative_int,
    positive_int,
    probability,
)
from .video import run_video


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gsam2",
        description=(
            "Grounded SAM 2: text-prompted detection (Grounding DINO by default; Florence-2, OWLv2, SAM 3, "
            "DINO-X and more with --detector) and segmentation (SAM 2)."
        ),
        epilog='Example: gsam2 image --prompt "car. person. dog." --input photos/ --output out/',
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    image = subcommands.add_parser(
        "image",
        help="detect and segment what a text prompt names in image files",
        description=(
            "For every input image, write OUT/<stem>.json (boxes in pixels, COCO RLE masks, scores: the "
            "Grounded-SAM-2 reference format) and OUT/<stem>.jpg (the image with masks, boxes and labels). "
            "Exits with 1 if any input failed, 2 on a usage error."
        ),
    )
    image.add_argument(
        "--prompt",
        help='what to find: lower-case class names each followed by a period, e.g. "car. person. dog." '
        "(not needed by Florence-2's prompt-free tasks)",
    )
    add_image_file_options(image)
    add_ray_options(image)
    add_threshold_options(image)
    add_model_options(image)
    image.set_defaults(run=run_image)

    autolabel = subcommands.add_parser(
        "autolabel",
        help="label images without a prompt: Florence-2 captions them, grounds the caption, SAM 2 segments",
        description=(
            "For every input image, Florence-2 writes a caption, grounds the caption's phrases to boxes, and "
            'SAM 2 segments them. Writes OUT/<stem>.json (the image command\'s format plus "caption") and '
            "OUT/<stem>.jpg."
        ),
    )
    autolabel.add_argument(
        "--caption",
        choices=("caption", "detailed_caption", "more_detailed_caption"),
        default="more_detailed_caption",
        help="how much Florence-2 writes: longer captions name more objects (default: more_detailed_caption)",
    )
    add_image_file_options(autolabel)
    add_ray_options(autolabel)
    add_model_options(autolabel, detector_default="florence2", slicing=False)
    autolabel.set_defaults(run=run_autolabel)

    video = subcommands.add_parser(
        "video",
        help="track what a text prompt names through a video, with stable object ids",
        description=(
            "Decodes the video as a stream, detects every --step frames, tracks objects with SAM 2 and keeps "
            "their ids. Writes OUT/<stem>.jsonl (one line per frame: objects with id, class, box, COCO RLE mask, "
            "score) and OUT/<stem>.mp4 (masks, boxes and 'id class' labels). --input may also be a camera index "
            "(0) or a stream URL for live tracking; stop it with Ctrl-C."
        ),
    )
    video.add_argument("--prompt", help='what to track, e.g. "car. person." (not needed by prompt-free detectors)')
    video.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="VIDEO",
        help="video file, camera index or stream URL; or several videos: files, folders, glob patterns "
        "(quote them: 'clips/*.mp4'), each written as OUT/<stem>.jsonl and .mp4",
    )
    video.add_argument("--output", required=True, metavar="OUT", help="folder to write results into (created)")
    add_threshold_options(video)
    video.add_argument(
        "--step",
        type=positive_int,
        default=DEFAULT_STEP,
        help=f"run the detector every STEP processed frames to pick up new objects (default: {DEFAULT_STEP})",
    )
    video.add_argument(
        "--iou-threshold",
        type=probability,
        default=DEFAULT_IOU_THRESHOLD,
        help=f"mask IoU above which a detection is an object already tracked (default: {DEFAULT_IOU_THRESHOLD})",
    )
    video.add_argument(
        "--prompt-type",
        choices=("mask", "box", "point"),
        default="mask",
        help="how detections prompt SAM 2's tracker (default: mask)",
    )
    video.add_argument(
        "--reverse",
        action="store_true",
        help="also track newly found objects backwards (up to 2*STEP frames) so tracks start "
        "where objects appear; delays output by 2*STEP frames",
    )
    add_end_after_option(video)
    video.add_argument(
        "--start-frame", type=non_negative_int, default=0, help="first frame to process (0-based, default 0)"
    )
    video.add_argument("--stride", type=positive_int, default=1, help="process every STRIDE-th frame (default 1)")
    video.add_argument(
        "--tracker",
        default=DEFAULT_SEGMENTER,
        help=(
            f"tracker: a backend or size ({', '.join(tracker_choices())}), BACKEND:CHECKPOINT (e.g. "
            f"edgetam:PATH), or a SAM 2 video hub id or local folder (default: {DEFAULT_SEGMENTER}); sam3 "
            "(sam3:CHECKPOINT) to find and track with SAM 3 alone, detecting on every frame (no --detector, "
            "--step, --iou-threshold, --prompt-type, --reverse; --box-threshold hides objects SAM 3 scores lower)"
        ),
    )
    add_format_option(video, VIDEO_FORMATS, "jsonl", {
        "jsonl": "OUT/<stem>.jsonl, one line per frame",
        "mot": "OUT/mot/<stem>.txt, MOT Challenge boxes",
        "mots": "OUT/mots/<stem>.txt, MOTS Challenge masks",
        "ytvis": "OUT/ytvis/<stem>.json, YouTube-VIS",
    })  # fmt: skip
    video.add_argument("--no-draw", action="store_true", help="write only the labels, not the MP4")
    video.add_argument("--quiet", action="store_true", help="no progress bar")
    video.add_argument("--recursive", action="store_true", help="look for videos in sub-folders too")
    add_ray_options(video, "videos")
    add_model_options(video)
    video.set_defaults(run=run_video)

    add_eval_command(subcommands)

    cvat = subcommands.add_parser(
        "cvat",
        help="label a CVAT task: shapes on every frame, or tracks with stable ids through a video",
        description=(
            "Works with any CVAT through cvat-sdk (pip install 'gsam2[cvat]'). Credentials come from the "
            "environment: CVAT_URL, and CVAT_ACCESS_TOKEN or CVAT_USER and CVAT_PASSWORD. The task's label names "
            "are the prompt unless --prompt names some of them."
        ),
    )
    cvat_commands = cvat.add_subparsers(dest="cvat_command", required=True, metavar="ACTION")
    for name, help_text in (
        ("annotate", "detect and segment on every frame; upload shapes (mask, polygon or box, as each label allows)"),
        ("track", "track objects through a video task with stable ids; upload one CVAT track per object"),
    ):
        action = cvat_commands.add_parser(name, help=help_text, description=help_text)
        target = action.add_mutually_exclusive_group(required=True)
        target.add_argument("--task", dest="task_id", type=positive_int, help="the CVAT task id")
        target.add_argument("--job", dest="job_id", type=positive_int, help="a CVAT job id: only its frames")
        action.add_argument("--prompt", help="phrases naming task labels (default: all the task's label names)")
        action.add_argument(
            "--replace",
            action="store_true",
            help="first remove the automatic (source: auto) shapes and tracks of the labels this run writes",
        )
        action.add_argument("--quiet", action="store_true", help="no progress bar")
        add_threshold_options(action)
        if name == "track":
            action.add_argument(
                "--step", type=positive_int, default=DEFAULT_STEP, help=f"detect every STEP frames (default {DEFAULT_STEP})"
            )
            action.add_argument(
                "--iou-threshold",
                type=probability,
                default=DEFAULT_IOU_THRESHOLD,
                help=f"mask IoU above which a detection is an object already tracked (default {DEFAULT_IOU_THRESHOLD})",
            )
            action.add_argument("--reverse", action="store_true", help="also track new objects backwards")
            action.add_argument(
                "--save-copy",
                metavar="OUT",
                help="also write the tracks into this folder as gsam2 video does (OUT/task<ID>.jsonl, and --format)",
            )
            add_format_option(action, VIDEO_FORMATS, "jsonl", {
                "jsonl": "OUT/task<ID>.jsonl", "mot": "OUT/mot/task<ID>.txt", "mots": "OUT/mots/task<ID>.txt",
                "ytvis": "OUT/ytvis/task<ID>.json",
            })  # fmt: skip
            add_end_after_option(action)
            action.add_argument(
                "--prompt-type",
                choices=("mask", "box", "point"),
                default="mask",
                help="how detections prompt SAM 2's tracker (default: mask)",
            )
            action.add_argument(
                "--tracker",
                default=DEFAULT_SEGMENTER,
                help=f"tracker: a backend or size ({', '.join(tracker_choices())}), BACKEND:CHECKPOINT (e.g. "
                "edgetam:PATH), a SAM 2 video hub id or local folder, or sam3 (sam3:CHECKPOINT) to find and "
                "track with SAM 3 alone",
            )
        add_model_options(action, florence2_task_option="--florence2-task")  # --task is the CVAT task here
        action.set_defaults(run=run_cvat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if in_main_thread else None
    try:
        return args.run(args)
    except KeyboardInterrupt as stop:  # stopped before the work loop began: nothing to finalise
        print("interrupted", file=sys.stderr)
        return stopped_status(stop)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
