"""``gsam2 video``: track what a prompt names through a video, one stream of frames."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ..core import GroundedSam2Error, InputError, draw_detections
from ..core.formats.video import VideoDatasetWriter, check_video_outputs
from ..core.outputs import check_no_overwrite, check_not_foreign, check_output_folder, prepare_output_folder
from ..core.run import Run
from .console import EXIT_FAILURES, EXIT_OK, stopped_status, usage_error
from .options import chosen_formats, spec_from_args


def frame_record(frame_index: int, detections) -> dict:
    """One JSON line of ``gsam2 video``'s output."""
    from ..core.detections import class_names
    from ..core.masks import coco_rle

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

    from ..core.engine import WriteBehind, interruptible, read_ahead
    from ..core.video_io import VideoWriter, iter_frames, probe_video

    source: str | int = int(args.input) if args.input.isdigit() else args.input
    stem = Path(str(source)).stem if isinstance(source, str) else f"camera{source}"
    formats = chosen_formats(args)
    try:
        output = check_output_folder(args.output, "--output")
        written = [output / f"{stem}.jsonl"] if "jsonl" in formats else []
        written += [] if args.no_draw else [output / f"{stem}.mp4"]
        if isinstance(source, str) and Path(source).exists():
            check_no_overwrite(written, [Path(source)], "--output")
        # one output each: a folder in the way is refused too
        check_not_foreign(written, folders_refused=True, setting="--output")
        check_video_outputs(output, stem, formats, setting="--output")
        spec = spec_from_args(args).check_for_video()
        # A URL that does not answer holds the open for its timeout: Ctrl-C and SIGTERM must still stop it.
        info = interruptible(probe_video, source) if isinstance(source, str) else None
        if info is not None and info.frame_count and args.start_frame >= info.frame_count:
            raise InputError(f"--start-frame {args.start_frame}: {source} has {info.frame_count} frames (0-based)")
        if isinstance(source, int):
            check_camera(source)
        run = Run(spec)
        run.load_for_video(check_prompt=True)  # all of it before decoding
        # The classes of MOTS / YouTube-VIS: the detector's phrases (SAM 3: the prompt's), in prompt order.
        phrases = list(spec.prompt or []) if spec.tracks_with_sam3 else run.phrases()
    except GroundedSam2Error as error:
        return usage_error(error)

    prepare_output_folder(output, "--output")
    # MOT / MOTS / YouTube-VIS (core/formats/video.py), fed every frame's JSONL objects, closed with what was done.
    dataset = VideoDatasetWriter(output, stem, formats, phrases)
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
    results = run.track(frames, keep_frames=not args.no_draw)
    fps = (info.fps / args.stride) if info else 30.0
    total = None
    if info and info.frame_count:
        total = max(0, -(-(info.frame_count - args.start_frame) // args.stride))
    frame_size = (info.height, info.width) if info else None  # YouTube-VIS's video size, also when nothing is found
    object_ids: set[int] = set()
    frames_done, started, interrupted = 0, time.perf_counter(), None
    writer = None if args.no_draw else VideoWriter(output / f"{stem}.mp4", fps=fps, resize_mismatched=True)
    progress = tqdm(total=total, desc="frames", unit="frame", disable=args.quiet)

    def write_frame(result, lines) -> None:
        """One frame's JSONL line (mask RLE), drawing and MP4 frame: in the background, in frame order."""
        nonlocal frames_done, writer  # only this job (one writer thread) changes them while the run goes on
        record = frame_record(result.frame_index, result.detections)
        lines.write(json.dumps(record) + "\n")
        lines.flush()  # live sources: each frame's result is on disk as soon as it is final
        dataset.add_frame(result.frame_index, record["objects"], size=frame_size)
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
        # Without --format jsonl the lines go nowhere (os.devnull): the other formats are made from the same records.
        with open(output / f"{stem}.jsonl" if "jsonl" in formats else os.devnull, "w") as lines, WriteBehind() as writes:
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
        dataset.close()  # MOT / MOTS / YouTube-VIS files with every frame written to the JSONL
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
