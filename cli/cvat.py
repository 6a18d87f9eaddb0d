"""``gsam2 cvat annotate|track``: label a CVAT task or job through cvat-sdk."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..core import GroundedSam2Error, InputError
from ..core.outputs import check_not_foreign, check_output_folder, prepare_output_folder
from ..core.run import Run
from .console import EXIT_FAILURES, EXIT_OK, printable, report, usage_error
from .options import chosen_formats, spec_from_args


def run_cvat(args: argparse.Namespace) -> int:
    """``gsam2 cvat annotate|track``: label a CVAT task through cvat-sdk."""
    from tqdm import tqdm

    from ..nuclio.rest import task_labeling

    if getattr(args, "format", None) and getattr(args, "save_copy", None) is None:
        return usage_error(InputError("--format chooses what --save-copy OUT writes: give --save-copy OUT too"))
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
            if args.save_copy is not None:
                check_copy(args, task_id)
        run = Run(spec_from_args(args).replace(prompt=list(mapping)))  # the prompt: the labels' phrases
        run.load_for_video() if args.cvat_command == "track" else run.load_for_images()
    except GroundedSam2Error as error:
        return usage_error(error)
    started = time.perf_counter()
    total = int(task.size) if frames.last is None else min(frames.last, int(task.size) - 1) - frames.first + 1
    progress = tqdm(total=total, desc="frames", unit="frame", disable=args.quiet)
    try:
        if args.cvat_command == "annotate":

            def report_failure(message: str) -> None:  # a frame that failed; the others are still labelled
                tqdm.write(printable(f"error: {message}", sys.stderr), file=sys.stderr)

            summary = task_labeling.annotate_task(
                task, mapping, run, progress, replace=args.replace, frames=frames, on_failure=report_failure
            )
        else:
            copy = open_copy(args, task, list(mapping))
            try:
                summary = task_labeling.track_task(
                    task, mapping, run, progress, replace=args.replace, frames=frames, on_frame=copy
                )
            finally:
                if copy is not None:
                    copy.close()
    except GroundedSam2Error as error:
        report(f"error: {error}", sys.stderr)
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


class TrackCopy:
    """``--save-copy OUT``: the tracks also on disk, as ``gsam2 video`` writes them (``--format``), as ``task<ID>``."""

    def __init__(
        self, output: Path, stem: str, formats: list[str], phrases: list[str], size: tuple[int, int] | None = None
    ):
        from ..core.formats import VideoDatasetWriter

        prepare_output_folder(output, "--save-copy")
        self.size = size  # (height, width): YouTube-VIS's video size, also when no frame has an object
        self.lines = open(output / f"{stem}.jsonl", "w") if "jsonl" in formats else None
        self.dataset = VideoDatasetWriter(output, stem, formats, phrases)

    def __call__(self, result) -> None:
        from .video import frame_record

        record = frame_record(result.frame_index, result.detections)
        if self.lines is not None:
            self.lines.write(json.dumps(record) + "\n")
            self.lines.flush()
        self.dataset.add_frame(result.frame_index, record["objects"], size=self.size)

    def close(self) -> None:
        if self.lines is not None:
            self.lines.close()
        self.dataset.close()


def check_copy(args: argparse.Namespace, task_id: int) -> None:
    """Usage errors of ``--save-copy`` before any model loads (the same checks as ``gsam2 video --output``)."""
    from ..core.formats.video import check_video_outputs

    output, formats = check_output_folder(args.save_copy, "--save-copy"), chosen_formats(args)
    written = [output / f"task{task_id}.jsonl"] if "jsonl" in formats else []
    check_not_foreign(written, folders_refused=True, setting="--save-copy")
    check_video_outputs(output, f"task{task_id}", formats, setting="--save-copy")


def open_copy(args: argparse.Namespace, task, phrases: list[str]) -> TrackCopy | None:
    """The ``--save-copy`` writers of ``task``, or ``None`` without the option."""
    if getattr(args, "save_copy", None) is None:
        return None
    try:  # the first frame's size from the task's metadata (a video task's frames all have it)
        first = task.get_meta().frames[0]
        size = (int(first.height), int(first.width))
    except (AttributeError, IndexError, TypeError, ValueError):
        size = None
    return TrackCopy(Path(args.save_copy), f"task{task.id}", chosen_formats(args), phrases, size)
