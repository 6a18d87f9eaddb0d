"""The ``gsam2`` command line: Grounded SAM 2 over files, in bulk.

gsam2 image --prompt "car. person. dog." --input photos/ --output out/
gsam2 image --detector florence2 --task dense_region_caption --input photos/ --output out/
gsam2 autolabel --input photos/ --output out/
gsam2 video --prompt "car." --input traffic.mp4 --output out/
gsam2 cvat track --task 42          # CVAT_URL, CVAT_USER/CVAT_PASSWORD (or CVAT_ACCESS_TOKEN) in the environment
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .core import (
    DEFAULT_BOX_THRESHOLD,
    DEFAULT_DETECTOR,
    DEFAULT_SEGMENTER,
    DEFAULT_TEXT_THRESHOLD,
    SAM2_CHECKPOINTS,
    GroundedSam2Error,
    InputError,
    detections_to_record,
    draw_detections,
    ground_and_segment,
    load_detector,
    load_image,
    load_segmenter,
    parse_prompt,
)
from .core.detectors.sliced import DEFAULT_SLICE_OVERLAP
from .core.devices import DEVICE_CHOICES
from .core.errors import DiskFullError
from .core.images import IMAGE_EXTENSIONS, special_file_kind
from .core.models import detector_choices, tracker_choices
from .core.outputs import (
    GSAM2_MARK,
    atomic_save,
    atomic_write_text,
    check_no_overwrite,
    check_not_foreign,
    check_output_folder,
    inside,
    output_names,
    prepare_output_folder,
)
from .core.pipeline import (
    DEFAULT_BATCH_SIZE,
    PreparedBatch,
    default_batch_size,
    detector_phrases,
    preparation_steps,
)

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


@dataclass
class RunSummary:
    """What a bulk run did, printed at the end."""

    images: int = 0
    objects: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str | None = None  # why the run ended before its last image (a full disk)
    first_frame_only: list[str] = field(default_factory=list)  # inputs of several frames (animated GIF, TIFF pages)

    def lines(self) -> list[str]:
        rate = self.images / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"images processed: {self.images}",
            f"objects found:    {self.objects}",
            f"failures:         {len(self.failures)}",
            f"time:             {self.seconds:.1f} s ({rate:.2f} images/s)",
        ]
        if self.first_frame_only:
            count, shown = len(self.first_frame_only), ", ".join(self.first_frame_only[:5])
            more = f" and {count - 5} more" if count > 5 else ""
            lines.append(
                f"{count} input{'s' if count > 1 else ''} had several frames; their first frame was used: {shown}{more}"
            )
        lines += [f"  failed: {failure}" for failure in self.failures]
        if self.stopped:
            lines.append(f"stopped:          {self.stopped}")
        return lines


def printable(text: str, stream=None) -> str:
    """``text`` as ``stream`` (default: standard output) can print it, whatever the file names in it.

    A name that is not valid in the file system's encoding reaches us with
    surrogates in place of its bytes (``os.fsdecode``); they become ``\\xff``
    escapes, and so does any character the stream's encoding lacks, so a strict
    stream (``PYTHONIOENCODING=utf-8:strict``, an ASCII terminal) never raises
    ``UnicodeEncodeError`` on a name.
    """
    stream = stream or sys.stdout
    filesystem = sys.getfilesystemencoding()
    try:
        text = text.encode(filesystem, "surrogateescape").decode(filesystem, "backslashreplace")
    except UnicodeError:  # a surrogate no file name decodes to: escaped below
        pass
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding)


def report(text: str, stream=None) -> None:
    """Print ``text`` with :func:`printable` (stdout by default)."""
    stream = stream or sys.stdout
    print(printable(text, stream), file=stream)


def expand_inputs(
    inputs: Sequence[str], recursive: bool = False, skip_folder: Path | None = None
) -> tuple[list[Path], list[str]]:
    """Turn files, folders and globs into a sorted, de-duplicated list of image files.

    Files found in ``skip_folder`` (the run's output folder, when it lies inside an
    input folder) are left out, so a run never reads what an earlier run wrote.
    Returns the files and one error line for every input that matched nothing, and
    for every FIFO, device or socket a folder or pattern holds (opening one could
    block the run forever). A file reached twice (through a symlinked folder, say)
    is one input.

    Raises:
        InputError: an input named explicitly is a FIFO, a device or a socket.
    """
    files: list[Path] = []
    errors: list[str] = []

    def keep(found: Path) -> bool:
        if skip_folder is not None and inside(found, skip_folder):
            return False
        kind = special_file_kind(found)
        if kind is not None:
            errors.append(f"{found}: is {kind}, not an image file; skipped")
        return found.is_file()

    for raw in inputs:
        path = Path(raw)
        if not raw.strip():
            errors.append("--input '': an empty path names no file")
        elif path.is_dir():
            entries = folder_entries(path, recursive)
            found = sorted(p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and keep(p))
            if not found:
                errors.append(f"{raw}: folder holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            files.extend(found)
        elif path.exists():
            kind = special_file_kind(path)
            if kind is not None:  # refused before anything opens it: reading it could block forever
                raise InputError(f"--input {raw}: is {kind}, not an image file")
            files.append(path)  # an explicit file is tried whatever its extension
        elif glob.has_magic(raw):
            found = sorted(Path(p) for p in glob.glob(raw, recursive=recursive) if keep(Path(p)))
            if not found:
                errors.append(f"{raw}: pattern matched no files")
            files.extend(found)
        else:
            errors.append(f"{raw}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    return unique, errors


def folder_entries(folder: Path, recursive: bool) -> list[Path]:
    """The entries of ``folder`` that are not folders; with ``recursive``, those of every sub-folder too.

    Symlinked sub-folders (``rec/linked -> ../other``) are followed, which
    ``Path.glob("**")`` does not do; each real folder is listed once, so a link
    back up the tree ends there instead of looping.
    """
    if not recursive:
        return [entry for entry in folder.iterdir() if not entry.is_dir()]
    entries: list[Path] = []
    listed: set[tuple[int, int]] = set()
    for root, subfolders, names in os.walk(folder, followlinks=True):
        status = os.stat(root)
        if (status.st_dev, status.st_ino) in listed:
            subfolders.clear()  # listed already: os.walk itself would follow a loop until paths grow too long
            continue
        listed.add((status.st_dev, status.st_ino))
        entries.extend(Path(root) / name for name in names)
    return entries


@dataclass
class ImageRunPlan:
    """What a ``gsam2 image`` / ``autolabel`` run reads and writes, checked before any model loads."""

    files: list[Path]
    names: list[str]
    output: Path
    input_errors: list[str]


def plan_image_run(args: argparse.Namespace) -> ImageRunPlan:
    """Inputs, output folder and output names; raises ``InputError`` (a usage error) before any work."""
    output = check_output_folder(args.output)
    # The output folder inside an input folder: what earlier runs wrote there is not input.
    nested = any(
        Path(raw).is_dir() and inside(output, Path(raw)) and not inside(Path(raw), output)
        for raw in args.input
        if raw.strip()
    )
    files, errors = expand_inputs(args.input, recursive=args.recursive, skip_folder=output if nested else None)
    names = output_names(files)
    written = [output / f"{name}.json" for name in names]
    if not args.no_draw:
        written += [output / f"{name}.jpg" for name in names]
    check_no_overwrite(written, files)
    check_not_foreign(written)  # e.g. a user's a.json (a LabelMe sidecar) next to a.png: never replaced
    return ImageRunPlan(files, names, output, errors)


def run_image(args: argparse.Namespace) -> int:
    try:
        plan = plan_image_run(args)
        detector = detector_from_args(args)
        phrases = detector_phrases(detector, args.prompt)
        segmenter = None if detector.produces_masks else load_segmenter(args.segmenter, device=args.device)
        batch_size = args.batch_size or default_batch_size(getattr(detector, "device", None))
        compile_if_asked(args, segmenter, batch_size)
    except GroundedSam2Error as error:
        report(f"error: {error}", sys.stderr)
        return EXIT_USAGE

    prepare = preparation_steps(phrases, detector, segmenter)  # one batch ahead of the models (core/engine.py)

    def label_images(images, prepared=None):
        results = ground_and_segment(
            images,
            phrases,
            detector=detector,
            segmenter=segmenter,
            box_threshold=args.box_threshold,
            text_threshold=args.text_threshold,
            batch_size=batch_size,
            prepared=PreparedBatch(*prepared) if prepared else None,
            compact_masks=True,  # crops: the JSON's RLE and the drawing never need full frames
            defer_masks=True,  # made in the encode workers (write), not in the model's thread
        )
        return [(detections, {}) for detections in results]

    return label_image_files(args, plan, batch_size, label_images, prepare)


def run_autolabel(args: argparse.Namespace) -> int:
    from .core.autolabel import auto_label
    from .core.detectors.florence2 import CAPTION_TASKS, task_token

    try:
        plan = plan_image_run(args)
        task_token(args.caption, CAPTION_TASKS)
        florence2 = load_detector(args.detector, device=args.device, task="phrase_grounding")
        segmenter = load_segmenter(args.segmenter, device=args.device)
        batch_size = args.batch_size or default_batch_size(florence2.device)
        compile_if_asked(args, segmenter, batch_size)
    except GroundedSam2Error as error:
        report(f"error: {error}", sys.stderr)
        return EXIT_USAGE

    def label_images(images):
        results = auto_label(
            images, florence2, segmenter, caption_task=args.caption, batch_size=batch_size, compact_masks=True
        )
        return [(result.detections, {"caption": result.caption}) for result in results]

    return label_image_files(args, plan, batch_size, label_images)


def compile_if_asked(args: argparse.Namespace, segmenter, batch_size: int) -> None:
    """``--compile``: compile SAM 2's image encoder for this run's batch size; a usage error where there is none."""
    if not args.compile:
        return
    if segmenter is None or not hasattr(segmenter, "compile_encoder"):
        raise InputError(
            "--compile compiles the image encoder of a transformers SAM 2 checkpoint; this run has none "
            "(SAM 3 makes its own masks, and original .pt checkpoints are not compiled)"
        )
    segmenter.compile_encoder(batch_size)


def label_image_files(args: argparse.Namespace, plan: ImageRunPlan, batch_size: int, label_images, prepare=None) -> int:
    """The bulk loop of ``gsam2 image`` and ``gsam2 autolabel``: load, label, write JSON (+ drawing), summarise.

    ``label_images`` turns a batch of RGB arrays into ``(detections, extra
    JSON fields)`` per image. A file that cannot be read, or a batch that
    fails, is reported and the run goes on. Every file is written under a
    temporary name and renamed, so none is ever left half-written.
    """
    from tqdm import tqdm

    files, output = plan.files, plan.output
    for failure in plan.input_errors:
        report(f"error: {failure}", sys.stderr)
    summary = RunSummary(failures=list(plan.input_errors))
    if not files:
        print("error: no input images found", file=sys.stderr)
        return EXIT_FAILURES
    prepare_output_folder(output)

    started = time.perf_counter()
    progress = tqdm(total=len(files), desc="images", unit="img", disable=args.quiet)
    try:
        label_batches(args, plan, batch_size, label_images, summary, progress, prepare)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: every file written so far is complete
        progress.close()
        summary.seconds = time.perf_counter() - started
        report("\n".join(summary.lines()) + "\n(interrupted)")
        return stopped_status(stop)
    except DiskFullError as full:  # every later write would fail too: stop, and say so in the summary
        # Outcomes come in input order, so the image that hit it is the first without one. run_pipelined
        # waited for the writes in flight, which removed their temporary files: every file left is complete.
        ended = summary.images + len(summary.failures) - len(plan.input_errors)
        summary.failures.append(f"{files[ended]}: {full}")
        summary.stopped = f"{str(full.strerror).lower()}; {len(files) - ended - 1} images not processed"
        tqdm.write(printable(f"error: {summary.failures[-1]}; the run stops", sys.stderr), file=sys.stderr)
    progress.close()
    summary.seconds = time.perf_counter() - started
    report("\n".join(summary.lines()))
    return EXIT_FAILURES if summary.failures else EXIT_OK


def label_batches(
    args, plan: ImageRunPlan, batch_size: int, label_images, summary: RunSummary, progress, prepare=None
) -> None:
    """Decode ahead, label in batches, encode and write in the background (:func:`~.core.engine.run_pipelined`)."""
    from PIL import Image
    from tqdm import tqdm

    from .core.engine import reuse_freed_buffers, run_pipelined
    from .core.masks import finish_masks

    output = plan.output
    reuse_freed_buffers()  # no page faults on every batch's large buffers (a bulk process keeps its peak)

    several_frames: set[Path] = set()

    def load(item):
        return load_image(item[0], on_several_frames=lambda: several_frames.add(item[0]))

    def write(item, image, labelled) -> int:
        """Encode (RLE, JSON, drawing) and write one image's files; return its number of objects."""
        (path, stem), (detections, extra) = item, labelled
        detections = finish_masks(detections)  # SAM 2's logits -> mask crops, off the model's thread
        record = {**detections_to_record(detections, path, image.shape[:2]), **extra}
        atomic_write_text(output / f"{stem}.json", json.dumps(record, indent=2))
        if not args.no_draw:
            drawing = Image.fromarray(draw_detections(image, detections))
            atomic_save(  # the comment tells a later run this file is ours to replace (check_not_foreign)
                output / f"{stem}.jpg",
                lambda temporary: drawing.save(temporary, "JPEG", quality=90, comment=GSAM2_MARK),
            )
        return len(detections)

    items = list(zip(plan.files, plan.names))
    for outcome in run_pipelined(items, load, label_images, write, batch_size=batch_size, prepare=prepare):
        path = outcome.item[0]
        if outcome.error is not None:  # that image's failure; the others of its batch still count
            # A load error names the file already; a labelling or encoding error gets it prefixed.
            message = outcome.error if outcome.stage == "load" else f"{path}: {outcome.error}"
            summary.failures.append(message)
            tqdm.write(printable(f"error: {message}", sys.stderr), file=sys.stderr)
        else:
            summary.images += 1
            summary.objects += outcome.value
            if path in several_frames:  # in input order (the decode workers finish in any order)
                summary.first_frame_only.append(str(path))
        progress.update(1)


def tracking_options(args: argparse.Namespace) -> dict:
    """The detect-and-track options ``gsam2 video`` and ``gsam2 cvat track`` share (``GroundedTracker``'s)."""
    return {
        "step": args.step,
        "iou_threshold": args.iou_threshold,
        "prompt_type": args.prompt_type,
        "box_threshold": args.box_threshold,
        "text_threshold": args.text_threshold,
        "reverse": args.reverse,
    }


def check_sam3_video_options(args: argparse.Namespace) -> None:
    """``--tracker sam3`` finds objects itself: refuse the options that would pick or steer another detector."""
    conflicts = []
    if args.detector != DEFAULT_DETECTOR:
        conflicts.append("--detector")
    if getattr(args, "task", None):
        conflicts.append("--task")
    if args.slice_size is not None:
        conflicts.append("--slice-size")
    if args.reverse:
        conflicts.append("--reverse")
    if conflicts:
        raise InputError(
            f"--tracker sam3 detects and tracks with SAM 3 alone; {', '.join(conflicts)} "
            "only applies to the detector + SAM 2 pipeline"
        )


def frame_record(frame_index: int, detections) -> dict:
    """One JSON line of ``gsam2 video``'s output."""
    from .core.detections import class_names
    from .core.masks import coco_rle

    names = class_names(detections)
    return {
        "frame_index": frame_index,
        "objects": [
            {
                "id": int(detections.tracker_id[i]),
                "class_name": names[i],
                "bbox": [round(float(v), 2) for v in detections.xyxy[i]],
                "score": round(float(detections.confidence[i]), 4),
                "segmentation": coco_rle(detections.mask, i),
            }
            for i in range(len(detections))
        ],
    }


def run_video(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .core.engine import WriteBehind, interruptible, read_ahead
    from .core.models import load_sam3_tracker, load_tracker, parse_sam3_tracker_spec
    from .core.video_io import VideoWriter, iter_frames, probe_video
    from .core.video_pipeline import ground_and_track

    source: str | int = int(args.input) if args.input.isdigit() else args.input
    uses_sam3 = parse_sam3_tracker_spec(args.tracker) is not None
    stem = Path(str(source)).stem if isinstance(source, str) else f"camera{source}"
    try:
        output = check_output_folder(args.output)
        written = [output / f"{stem}.jsonl"] + ([] if args.no_draw else [output / f"{stem}.mp4"])
        if isinstance(source, str) and Path(source).exists():
            check_no_overwrite(written, [Path(source)])
        check_not_foreign(written, folders_refused=True)  # one output each: a folder in the way is refused too
        if uses_sam3:
            check_sam3_video_options(args)
        # A URL that does not answer holds the open for its timeout: Ctrl-C and SIGTERM must still stop it.
        info = interruptible(probe_video, source) if isinstance(source, str) else None
        if info is not None and info.frame_count and args.start_frame >= info.frame_count:
            raise InputError(f"--start-frame {args.start_frame}: {source} has {info.frame_count} frames (0-based)")
        if isinstance(source, int):
            check_camera(source)
        if uses_sam3:
            phrases = parse_prompt(args.prompt or "")
            sam3 = load_sam3_tracker(args.tracker, device=args.device)
            tracks = sam3.start(phrases)  # a phrase SAM 3 cannot take fails here, before decoding
        else:
            detector = detector_from_args(args)
            phrases = detector_phrases(detector, args.prompt)
            segmenter = None if detector.produces_masks else load_segmenter(args.segmenter, device=args.device)
            tracker = load_tracker(args.tracker, device=args.device)
    except GroundedSam2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE

    prepare_output_folder(output)
    skipped: list[str] = []

    skipped_frames: list[int] = []

    def on_skip(frame_index, message):
        skipped.append(f"frame {frame_index}: {message}" if frame_index is not None else message)
        if frame_index is not None:
            skipped_frames.append(frame_index)
        tqdm.write(f"warning: {source}: skipped undecodable data ({message})", file=sys.stderr)

    cut_short: list[tuple[float, float]] = []  # (seconds of data, seconds the header gives): a truncated MKV, WebM

    # Decoded in a background thread, a few frames ahead of the tracker (core/engine.py).
    frames = read_ahead(
        iter_frames(
            source,
            start_frame=args.start_frame,
            stride=args.stride,
            on_skip=on_skip,
            on_truncated=lambda *seconds: cut_short.append(seconds),
        )
    )
    if uses_sam3:
        results = tracks.track(frames, args.box_threshold, keep_frames=not args.no_draw)
    else:
        results = ground_and_track(
            frames, phrases, detector, segmenter, tracker, keep_frames=not args.no_draw, **tracking_options(args)
        )
    fps = (info.fps / args.stride) if info else 30.0
    total = None
    if info and info.frame_count:
        total = max(0, -(-(info.frame_count - args.start_frame) // args.stride))
    object_ids: set[int] = set()
    frames_done, started, interrupted = 0, time.perf_counter(), None
    writer = None if args.no_draw else VideoWriter(output / f"{stem}.mp4", fps=fps, resize_mismatched=True)
    progress = tqdm(total=total, desc="frames", unit="frame", disable=args.quiet)

    def write_frame(result, lines) -> None:
        """One frame's JSONL line (mask RLE), drawing and MP4 frame: in the background, in frame order."""
        nonlocal frames_done, writer  # only this job (one writer thread) changes them while the run goes on
        lines.write(json.dumps(frame_record(result.frame_index, result.detections)) + "\n")
        lines.flush()  # live sources: each frame's result is on disk as soon as it is final
        if writer is not None:
            try:
                writer.write(draw_detections(result.frame, result.detections))
            except InputError as error:  # e.g. a 1x1 video: the results go on, the drawing stops
                tqdm.write(f"warning: no annotated video: {error}", file=sys.stderr)
                writer.close()
                writer = None
        object_ids.update(result.detections.tracker_id.tolist())
        frames_done += 1
        progress.update(1)

    try:
        with open(output / f"{stem}.jsonl", "w") as lines, WriteBehind() as writes:
            for result in results:  # SAM 2 tracks the next frame while the last ones are written
                writes.submit(write_frame, result, lines)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: the JSONL holds every frame handed over
        interrupted = stop
    except GroundedSam2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURES
    finally:
        progress.close()
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - started
    # A truncated file whose index lists more frames than can be decoded ends early without an error.
    undecodable = sum(
        1 for index in skipped_frames if index >= args.start_frame and (index - args.start_frame) % args.stride == 0
    )
    missing = (total - frames_done - undecodable) if total and not interrupted else 0
    print(f"frames processed: {frames_done}" + (" (interrupted)" if interrupted else ""))
    print(f"objects tracked:  {len(object_ids)}")
    print(f"frames skipped:   {len(skipped)}")
    if missing > 0:
        print(f"frames missing:   {missing} of {total} (the file ends before its index says: truncated?)")
    truncated = cut_short[0] if cut_short and not interrupted else None
    if truncated:  # no frame count in the file (Matroska): its header's duration says how much is missing
        read, header = truncated
        print(
            f"frames missing:   about {max(1, round((header - read) * fps))} (the file ends at {read:.2f} s, "
            f"its header says {header:.2f} s: truncated?)"
        )
    if writer is not None and writer.frames_resized:
        print(f"frames resized:   {writer.frames_resized} (the resolution changed; drawn at the first size)")
    print(f"time:             {seconds:.1f} s ({frames_done / seconds if seconds else 0:.2f} frames/s)")
    if interrupted:
        return stopped_status(interrupted)
    return EXIT_FAILURES if missing > 0 or truncated else EXIT_OK


def check_camera(index: int) -> None:
    """A usage error, before any model loads, if camera ``index`` cannot be opened."""
    import cv2

    capture = cv2.VideoCapture(index)
    try:
        if not capture.isOpened():
            raise InputError(f"--input {index}: no camera with this index can be opened")
    finally:
        capture.release()


def detector_from_args(args: argparse.Namespace):
    """The detector that ``--detector``, ``--task`` and ``--slice-size`` describe."""
    return load_detector(
        args.detector,
        device=args.device,
        task=getattr(args, "task", None),
        slice_size=args.slice_size,
        slice_overlap=args.slice_overlap,
    )


def add_model_options(
    parser: argparse.ArgumentParser,
    detector_default: str = DEFAULT_DETECTOR,
    slicing: bool = True,
    florence2_task_option: str = "--task",
) -> None:
    from .core.detectors.florence2 import FLORENCE2_TASKS

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
    parser.add_argument("--no-draw", action="store_true", help="write only the JSON, not the annotated images")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


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
    video.add_argument("--input", required=True, metavar="VIDEO", help="video file, camera index or stream URL")
    video.add_argument("--output", required=True, metavar="OUT", help="folder to write results into (created)")
    add_threshold_options(video)
    video.add_argument(
        "--step",
        type=positive_int,
        default=20,
        help="run the detector every STEP processed frames to pick up new objects (default: 20)",
    )
    video.add_argument(
        "--iou-threshold",
        type=probability,
        default=0.8,
        help="mask IoU above which a detection is an object already tracked (default: 0.8)",
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
    video.add_argument("--no-draw", action="store_true", help="write only the JSON lines, not the MP4")
    video.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(video)
    video.set_defaults(run=run_video)

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
            action.add_argument("--step", type=positive_int, default=20, help="detect every STEP frames (default 20)")
            action.add_argument(
                "--iou-threshold",
                type=probability,
                default=0.8,
                help="mask IoU above which a detection is an object already tracked (default 0.8)",
            )
            action.add_argument("--reverse", action="store_true", help="also track new objects backwards")
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


def run_cvat(args: argparse.Namespace) -> int:
    """``gsam2 cvat annotate|track``: label a CVAT task through cvat-sdk."""
    from tqdm import tqdm

    from .nuclio import task_labeling

    try:
        client = task_labeling.connect()
        frames = task_labeling.FrameRange()
        task_id = args.task_id
        if args.job_id is not None:
            task_id, frames = task_labeling.job_range(client, args.job_id)
        task = task_labeling.open_task(client, task_id)
        mapping = task_labeling.phrase_labels(task_labeling.task_labels(task), args.prompt, task_id)
        if args.cvat_command == "track":
            task_labeling.check_trackable(task, mapping)
        from .core.run import Run
        from .core.spec import RunSpec, SettingError, cli_name

        try:
            spec = RunSpec.build(
                prompt=list(mapping),
                detector=args.detector,
                task=getattr(args, "task", None),
                slice_size=args.slice_size,
                slice_overlap=args.slice_overlap,
                segmenter=args.segmenter,
                device=args.device,
                box_threshold=args.box_threshold,
                text_threshold=args.text_threshold,
                batch_size=getattr(args, "batch_size", None),
                compile=getattr(args, "compile", False),
                **({} if args.cvat_command != "track" else {
                    "tracker": args.tracker, "step": args.step, "iou_threshold": args.iou_threshold,
                    "prompt_type": args.prompt_type, "reverse": args.reverse}),
            )
        except SettingError as error:
            raise InputError(error.spelled(cli_name)) from None
        run = Run(spec)
        run.load_for_video() if args.cvat_command == "track" else run.load_for_images()
    except GroundedSam2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    started = time.perf_counter()
    total = int(task.size) if frames.last is None else min(frames.last, int(task.size) - 1) - frames.first + 1
    progress = tqdm(total=total, desc="frames", unit="frame", disable=args.quiet)
    try:
        if args.cvat_command == "annotate":

            def report(message: str) -> None:
                tqdm.write(printable(f"error: {message}", sys.stderr), file=sys.stderr)

            summary = task_labeling.annotate_task(
                task, mapping, run, progress, replace=args.replace, frames=frames, on_failure=report
            )
        else:
            summary = task_labeling.track_task(task, mapping, run, progress, replace=args.replace, frames=frames)
    except GroundedSam2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURES
    finally:
        progress.close()
    what = "shapes uploaded" if args.cvat_command == "annotate" else "tracks uploaded"
    print(f"frames processed: {summary.frames}")
    print(f"{what + ':':17} {summary.objects}")
    if args.replace:
        print(f"removed first:    {summary.removed} (automatic shapes and tracks of these labels)")
    if summary.failures:
        print(f"frames failed:    {len(summary.failures)}")
    print(f"time:             {time.perf_counter() - started:.1f} s")
    return EXIT_FAILURES if summary.failures else EXIT_OK


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, Slurm): stop as Ctrl-C does, with exit status 143."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def stopped_status(stop: KeyboardInterrupt) -> int:
    """128 + the signal: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return 143 if isinstance(stop, Terminated) else 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return args.run(args)
    except KeyboardInterrupt as stop:  # stopped before the work loop began: nothing to finalise
        print("interrupted", file=sys.stderr)
        return stopped_status(stop)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
