"""``gsam2 cvat annotate|track``: label a CVAT task or job through cvat-sdk."""

from __future__ import annotations

import argparse
import sys
import time

from ..core import GroundedSam2Error
from ..core.run import Run
from .console import EXIT_FAILURES, EXIT_OK, printable, report, usage_error
from .options import spec_from_args


def run_cvat(args: argparse.Namespace) -> int:
    """``gsam2 cvat annotate|track``: label a CVAT task through cvat-sdk."""
    from tqdm import tqdm

    from ..nuclio.rest import task_labeling

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
            summary = task_labeling.track_task(task, mapping, run, progress, replace=args.replace, frames=frames)
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
