"""The options the commands share, and the one place they become a run: :func:`spec_from_args`."""

from __future__ import annotations

import argparse

from ..core import DEFAULT_BOX_THRESHOLD, DEFAULT_DETECTOR, DEFAULT_SEGMENTER, DEFAULT_TEXT_THRESHOLD, SAM2_CHECKPOINTS
from ..core.detectors.sliced import DEFAULT_SLICE_OVERLAP
from ..core.devices import DEVICE_CHOICES
from ..core.formats import IMAGE_FORMATS
from ..core.backends import detector_choices
from ..core.pipeline import DEFAULT_BATCH_SIZE
from ..core.spec import RunSpec, cli_name

#: The run settings an option of the same name sets (``--slice-size`` -> ``slice_size``).
RUN_SETTINGS = tuple(name for name in RunSpec.__dataclass_fields__ if name != "api_token")

#: Where a CLI option's name is not ``--`` plus the setting's name with dashes.
CLI_OPTION_OF = {"caption_task": "--caption"}


def cli_option(setting: str) -> str:
    """How the command line spells a run setting: ``slice_overlap`` -> ``--slice-overlap``."""
    return CLI_OPTION_OF.get(setting) or cli_name(setting)


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The run the command's options describe; every command builds its run here.

    Options a command does not have keep the spec's defaults (``gsam2 image``
    has no ``--tracker``; ``gsam2 video`` no ``--batch-size``).
    """
    settings = {name: getattr(args, name) for name in RUN_SETTINGS if hasattr(args, name)}
    if hasattr(args, "caption"):
        settings["caption_task"] = args.caption
    return RunSpec.build(**settings)


def add_model_options(
    parser: argparse.ArgumentParser,
    detector_default: str = DEFAULT_DETECTOR,
    slicing: bool = True,
    florence2_task_option: str = "--task",
) -> None:
    from ..core.detectors.florence2 import FLORENCE2_TASKS

    models = parser.add_argument_group("models")
    models.add_argument(
        "--detector",
        default=detector_default,
        help=(
            f"detector: a backend ({', '.join(detector_choices())}), BACKEND:CHECKPOINT "
            "(e.g. owlv2:google/owlv2-large-patch14-ensemble), a Grounding DINO hub id or local folder, or an "
            f"original Grounding DINO .pth file (default: {detector_default})"
        ),
    )
    if detector_default != "florence2":  # autolabel fixes the task itself
        models.add_argument(
            florence2_task_option,
            dest="task",
            choices=list(FLORENCE2_TASKS),
            help="Florence-2 task (with --detector florence2; default object_detection). "
            "object_detection, dense_region_caption and region_proposal need no --prompt",
        )
    models.add_argument(
        "--segmenter",
        default=DEFAULT_SEGMENTER,
        help=(
            "SAM 2 checkpoint: a hub id, a local folder, or one of "
            f"{', '.join(SAM2_CHECKPOINTS)} (default: {DEFAULT_SEGMENTER})"
        ),
    )
    models.add_argument(
        "--device",
        default="auto",
        help=f"where to run: {', '.join(DEVICE_CHOICES)} or e.g. cuda:1 (default: auto = CUDA, then MPS, then CPU)",
    )
    if not slicing:
        return
    slicing = parser.add_argument_group("sliced inference (SAHI), for large images with small objects")
    slicing.add_argument(
        "--slice-size",
        type=positive_int,
        metavar="PIXELS",
        help="detect over overlapping square tiles of this size, then merge (default: whole images)",
    )
    slicing.add_argument(
        "--slice-overlap",
        type=int,
        default=None,
        metavar="PIXELS",
        help="overlap between tiles; at least the size of the objects you want "
        f"(default: {DEFAULT_SLICE_OVERLAP}, or a quarter of the slice if that is smaller)",
    )


def add_ray_options(parser: argparse.ArgumentParser, what: str = "images") -> None:
    """``--ray [ADDRESS]``, ``--workers``, ``--gpus-per-worker``, ``--resume``: the run on a Ray cluster, or resumed."""
    group = parser.add_argument_group("scale out on Ray (pip install \"gsam2[ray]\")")
    group.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help=f"spread the {what} over a Ray cluster's workers: without ADDRESS a local cluster on this machine "
        "(all its GPUs); 'auto' or HOST:PORT (ray://HOST:PORT) an existing one. Outputs are the same files",
    )
    group.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="with --ray: model replicas (default: one per GPU of the cluster, 1 on a cluster without GPUs)",
    )
    group.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        metavar="F",
        help="with --ray: GPUs each replica takes; fractions share a GPU between small models (default: 1, "
        "or 0 without GPUs)",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help=f"skip the {what} whose results in OUT are complete (they are read and checked); redo the rest",
    )


def add_end_after_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--end-after",
        type=positive_int,
        metavar="FRAMES",
        help="end an object's track after this many processed frames unseen; a later sighting is a new id "
        "(default: 2*STEP; with SAM 3, 40)",
    )


def add_threshold_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--box-threshold",
        type=probability,
        default=DEFAULT_BOX_THRESHOLD,
        help=f"minimum detector score of a box (default: {DEFAULT_BOX_THRESHOLD})",
    )
    parser.add_argument(
        "--text-threshold",
        type=probability,
        default=DEFAULT_TEXT_THRESHOLD,
        help=f"minimum score of the phrase a box is labelled with (default: {DEFAULT_TEXT_THRESHOLD})",
    )


def add_image_file_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="PATH",
        help="image files, folders of images, or glob patterns (quote them: 'photos/*.png')",
    )
    parser.add_argument("--output", required=True, metavar="OUT", help="folder to write results into (created)")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help=f"images per forward pass (default: {DEFAULT_BATCH_SIZE} on CUDA, 1 on a CPU, where batching "
        "was measured slower)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile SAM 2's image encoder with torch.compile: the first batch waits for the compilation "
        "(a minute or more), later ones may run faster; off by default (figures: bench/README.md)",
    )
    parser.add_argument("--recursive", action="store_true", help="look for images in sub-folders too")
    add_format_option(parser, IMAGE_FORMATS, "json", {
        "json": "OUT/<name>.json per image (the reference's format)",
        "coco": "OUT/annotations.json, COCO instances with RLE masks",
        "yolo": "OUT/labels/<name>.txt + OUT/data.yaml, Ultralytics segmentation",
    })
    parser.add_argument("--no-draw", action="store_true", help="write only the labels, not the annotated images")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_format_option(parser: argparse.ArgumentParser, formats: tuple[str, ...], default: str, what: dict[str, str]) -> None:
    """``--format NAME`` (repeatable): the dataset formats a run writes; ``args.format`` is then a de-duplicated list."""
    parser.add_argument(
        "--format",
        action="append",
        choices=formats,
        metavar="FORMAT",
        help="what to write, repeat for several: " + "; ".join(f"{name}: {what[name]}" for name in formats)
        + f" (default: {default})",
    )
    parser.set_defaults(format=None, format_default=default)


def chosen_formats(args: argparse.Namespace) -> list[str]:
    """The ``--format`` values in the order given, each once; the command's default when none was given."""
    return list(dict.fromkeys(getattr(args, "format", None) or [args.format_default]))


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: frames are counted from 0")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value
