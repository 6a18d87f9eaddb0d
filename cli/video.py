"""``gsam2 video``: track what a prompt names through a video (or many: one after another, or on Ray)."""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core import GroundedSam2Error, InputError, draw_detections
from ..core.outputs import (
    check_no_overwrite,
    check_not_foreign,
    check_output_folder,
    inside,
    output_names,
    prepare_output_folder,
)
from ..core.formats.video import VideoDatasetWriter, check_video_outputs
from ..core.run import Run
from .console import EXIT_FAILURES, EXIT_OK, printable, report, stopped_status, usage_error
from .image import check_local_options
from .inputs import VIDEO_EXTENSIONS, expand_inputs
from .options import chosen_formats, spec_from_args
from .resume import video_result_complete


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


@dataclass
class VideoOutcome:
    """What tracking one video came to: the figures its summary prints, or the error that stopped it."""

    source: str
    frames_done: int = 0
    objects: int = 0
    skipped: int = 0
    missing: int = 0  # frames the index lists that could not be decoded (a truncated file)
    total: int | None = None
    truncated: tuple[float, float] | None = None  # (seconds read, seconds the header gives)
    fps: float = 30.0
    resized: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    interrupted_by: KeyboardInterrupt | None = field(default=None, repr=False)  # for the exit status (130, 143)

    @property
    def failed(self) -> bool:
        """Whether this video counts as a failure for the exit status (an error, or frames it lacks)."""
        return self.error is not None or (not self.interrupted and (self.missing > 0 or self.truncated is not None))

    def lines(self) -> list[str]:
        """The summary, as ``gsam2 video`` has always printed it for one video."""
        if self.error is not None:
            return [f"error: {self.error}"]
        lines = [
            f"frames processed: {self.frames_done}" + (" (interrupted)" if self.interrupted else ""),
            f"objects tracked:  {self.objects}",
            f"frames skipped:   {self.skipped}",
        ]
        if self.missing > 0 and not self.interrupted:
            lines.append(f"frames missing:   {self.missing} of {self.total} (the file ends before its index says: truncated?)")
        if self.truncated and not self.interrupted:
            read, header = self.truncated
            lines.append(
                f"frames missing:   about {max(1, round((header - read) * self.fps))} (the file ends at {read:.2f} s, "
                f"its header says {header:.2f} s: truncated?)"
            )
        if self.resized:
            lines.append(f"frames resized:   {self.resized} (the resolution changed; drawn at the first size)")
        rate = self.frames_done / self.seconds if self.seconds else 0
        lines.append(f"time:             {self.seconds:.1f} s ({rate:.2f} frames/s)")
        return lines


@dataclass
class VideoJob:
    """One video of a run and its output name: ``OUT/<name>.jsonl`` and ``OUT/<name>.mp4``."""

    source: str | int
    name: str
    info: object = None  # core.video_io.VideoInfo, probed while planning (None for a camera)
    frames: int | None = None  # the frames this run processes, when the container says how many it has


def run_video(args: argparse.Namespace) -> int:
    if len(args.input) == 1 and not is_collection(args.input[0]) and args.ray is None:
        return run_one_video(args)
    return run_many_videos(args)


def is_collection(raw: str) -> bool:
    """Whether ``--input raw`` names several videos: a folder or a glob pattern."""
    if "://" in raw or raw.isdigit():  # a stream URL ("...?listen=1" is no glob) or a camera
        return False
    return bool(raw.strip()) and (Path(raw).is_dir() or (glob.has_magic(raw) and not Path(raw).exists()))


def run_one_video(args: argparse.Namespace) -> int:
    """One file, camera or stream URL, as ``gsam2 video`` has always run it: a live progress bar of frames."""
    from tqdm import tqdm

    from ..core.engine import interruptible
    from ..core.video_io import probe_video

    raw = args.input[0]
    source: str | int = int(raw) if raw.isdigit() else raw
    stem = Path(str(source)).stem if isinstance(source, str) else f"camera{source}"
    formats = chosen_formats(args)
    try:
        check_local_options(args)
        check_resumable(args, formats)
        output = check_output_folder(args.output, "--output")
        written = own_output_files(output, stem, formats, draw=not args.no_draw)
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
        frames = processed_frames(info, args.start_frame, args.stride)
        if args.resume and isinstance(source, str) and video_result_complete(output, stem, frames, not args.no_draw):
            print(f"already done:     {source} (--resume: complete results kept)")
            return EXIT_OK
        run = load_video_run(spec)
    except GroundedSam2Error as error:
        return usage_error(error)

    prepare_output_folder(output, "--output")
    progress = tqdm(total=frames, desc="frames", unit="frame", disable=args.quiet)
    warn = lambda message: tqdm.write(message, file=sys.stderr)  # noqa: E731
    try:
        outcome = track_video(run, source, info, output, stem, args.start_frame, args.stride, not args.no_draw,
                              progress=progress.update, warn=warn, formats=formats)
    finally:
        progress.close()
    if outcome.error is not None:
        print(f"error: {outcome.error}", file=sys.stderr)
        return EXIT_FAILURES
    print("\n".join(outcome.lines()))
    if outcome.interrupted:
        return stopped_status(outcome.interrupted_by)
    return EXIT_FAILURES if outcome.failed else EXIT_OK


def own_output_files(output: Path, stem: str, formats: list[str], draw: bool) -> list[Path]:
    """A video's own files under ``OUT``: its JSON lines (``--format jsonl``) and its drawing (the MP4)."""
    return ([output / f"{stem}.jsonl"] if "jsonl" in formats else []) + ([output / f"{stem}.mp4"] if draw else [])


def check_resumable(args: argparse.Namespace, formats: list[str]) -> None:
    """``--resume`` tells a complete result by its JSON lines: the other formats cannot be checked that way."""
    if args.resume and formats != ["jsonl"]:
        raise InputError(f"--resume: only --format jsonl results can be resumed, not {', '.join(formats)}")


def load_video_run(spec) -> Run:
    """The spec's models for tracking, loaded (errors here are usage errors)."""
    # the spec's prompt is the run's: one the detector cannot take fails before SAM 2 loads
    return Run(spec).load_for_video(check_prompt=True)  # all of it before decoding


def processed_frames(info, start_frame: int, stride: int) -> int | None:
    """How many frames a run from ``start_frame`` every ``stride`` frames processes, if the container says."""
    if info is None or not info.frame_count:
        return None
    return max(0, -(-(info.frame_count - start_frame) // stride))


def track_video(
    run: Run,
    source: str | int,
    info,
    output: Path,
    stem: str,
    start_frame: int = 0,
    stride: int = 1,
    draw: bool = True,
    progress=None,
    warn=None,
    formats=("jsonl",),
) -> VideoOutcome:
    """Track one video and write ``OUT/<stem>.jsonl`` (and ``.mp4``); the one tracking loop, local or on Ray.

    ``formats`` (``--format``): ``jsonl`` and/or MOT / MOTS / YouTube-VIS files (core/formats/video.py), all
    made from the same frame records; the dataset files are closed with what was done, also when interrupted.

    The JSON lines are written as frames are done (a live source's results are on disk at once); the MP4 is
    written under a temporary name and renamed when the video ends, so a run killed in the middle never
    leaves a broken MP4 under its name. Ctrl-C / SIGTERM end the video early, keeping what was done
    (``interrupted``); a failure is ``error``. ``progress(1)`` is called per frame, ``warn(line)`` per warning.
    """
    from ..core.engine import WriteBehind, read_ahead
    from ..core.outputs import temporary_path
    from ..core.video_io import VideoWriter, iter_frames

    outcome = VideoOutcome(str(source))
    warn = warn or outcome.warnings.append
    skipped_frames: list[int] = []

    def on_skip(frame_index, message):
        outcome.skipped += 1
        if frame_index is not None:
            skipped_frames.append(frame_index)
        warn(f"warning: {source}: skipped undecodable data ({message})")

    cut_short: list[tuple[float, float]] = []  # (seconds of data, seconds the header gives): a truncated MKV, WebM

    # Decoded in a background thread, a few frames ahead of the tracker (core/engine.py).
    frames = read_ahead(
        iter_frames(
            source,
            start_frame=start_frame,
            stride=stride,
            on_skip=on_skip,
            on_truncated=lambda *seconds: cut_short.append(seconds),
        )
    )
    results = run.track(frames, keep_frames=draw)
    outcome.fps = (info.fps / stride) if info else 30.0
    outcome.total = processed_frames(info, start_frame, stride)
    object_ids: set[int] = set()
    started = time.perf_counter()
    video_path = output / f"{stem}.mp4"
    drawing = temporary_path(video_path) if draw else None
    writer = VideoWriter(drawing, fps=outcome.fps, resize_mismatched=True) if drawing else None
    drawn = 0
    # The classes of MOTS / YouTube-VIS: the detector's phrases (SAM 3: the prompt's), in prompt order.
    phrases = list(run.spec.prompt or []) if run.spec.tracks_with_sam3 else run.phrases()
    dataset = VideoDatasetWriter(output, stem, formats, phrases)
    frame_size = (info.height, info.width) if info else None  # YouTube-VIS's video size, also when nothing is found

    def write_frame(result, lines) -> None:
        """One frame's JSONL line (mask RLE), drawing and MP4 frame: in the background, in frame order."""
        nonlocal writer, drawn  # only this job (one writer thread) changes them while the run goes on
        record = frame_record(result.frame_index, result.detections)
        lines.write(json.dumps(record) + "\n")
        lines.flush()  # live sources: each frame's result is on disk as soon as it is final
        dataset.add_frame(result.frame_index, record["objects"], size=frame_size)
        if writer is not None:
            try:
                writer.write(draw_detections(result.frame, result.detections))
                drawn += 1
            except InputError as error:  # e.g. a 1x1 video: the results go on, the drawing stops
                warn(f"warning: no annotated video: {error}")
                writer.close()
                writer = None
        object_ids.update(result.detections.tracker_id.tolist())
        outcome.frames_done += 1
        if progress is not None:
            progress(1)

    try:
        # Without --format jsonl the lines go nowhere (os.devnull): the other formats are made from the same records.
        with open(output / f"{stem}.jsonl" if "jsonl" in formats else os.devnull, "w") as lines, WriteBehind() as writes:
            for result in results:  # SAM 2 tracks the next frame while the last ones are written
                writes.submit(write_frame, result, lines)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: the JSONL holds every frame handed over
        outcome.interrupted = True
        outcome.interrupted_by = stop
    except GroundedSam2Error as error:
        outcome.error = str(error)
    except OSError as error:  # a full disk, a lost mount while writing: this video's one-line failure
        outcome.error = write_failure(error, output / f"{stem}.jsonl")
    finally:
        try:
            dataset.close()  # MOT / MOTS / YouTube-VIS files with every frame written to the JSONL
        except OSError as error:  # the disk filled while the dataset file was assembled
            outcome.error = outcome.error or write_failure(error, output / stem)
        except GroundedSam2Error as error:
            outcome.error = outcome.error or str(error)
        if writer is not None:
            writer.close()
            outcome.resized = writer.frames_resized
        if drawing is not None and writer is not None and drawn:
            os.replace(drawing, video_path)
        elif drawing is not None:
            drawing.unlink(missing_ok=True)  # no drawing after all (no frame, or frames too small to encode)
    outcome.seconds = time.perf_counter() - started
    outcome.objects = len(object_ids)
    # A truncated file whose index lists more frames than can be decoded ends early without an error.
    undecodable = sum(1 for index in skipped_frames if index >= start_frame and (index - start_frame) % stride == 0)
    if outcome.total and not outcome.interrupted:
        outcome.missing = outcome.total - outcome.frames_done - undecodable
    outcome.truncated = cut_short[0] if cut_short and not outcome.interrupted else None
    return outcome


def write_failure(error: OSError, default_path: Path) -> str:
    """One line for an ``OSError`` met while writing a video's results (``DiskFullError`` names its file)."""
    from ..core.errors import DiskFullError

    if isinstance(error, DiskFullError):
        return str(error)
    reason = (error.strerror or str(error)).lower()
    return f"{error.filename or default_path}: {reason}; the frames before it are written"


def plan_videos(args: argparse.Namespace) -> tuple[list[VideoJob], Path, list[str]]:
    """The videos of a run of several (folders, globs, lists), their output names, and the inputs that failed.

    Names follow ``gsam2 image``'s rule (:func:`~..core.outputs.output_names`): the stem, or the file name
    when two videos share a stem (``a.mp4.jsonl``, ``a.mkv.jsonl``), or ``-2`` when two folders hold the
    same name: two videos never write the same file. A video that cannot be opened is that input's failure.
    """
    from ..core.video_io import probe_video

    output = check_output_folder(args.output, "--output")
    for raw in args.input:
        if raw.strip() and raw.isdigit() or "://" in raw:
            raise InputError(f"--input {raw}: a camera or stream is tracked alone, not with other inputs or --ray")
    nested = any(Path(raw).is_dir() and inside(output, Path(raw)) for raw in args.input if raw.strip())
    files, errors = expand_inputs(
        args.input, recursive=args.recursive, skip_folder=output if nested else None, extensions=VIDEO_EXTENSIONS,
        kind="video",
    )
    names = output_names(files)
    formats = chosen_formats(args)
    written = [path for name in names for path in own_output_files(output, name, formats, draw=not args.no_draw)]
    check_no_overwrite(written, files, "--output")
    check_not_foreign(written, folders_refused=True, setting="--output")
    for name in names:
        check_video_outputs(output, name, formats, setting="--output")
    jobs = []
    for path, name in zip(files, names):
        try:
            info = probe_video(str(path))
        except GroundedSam2Error as error:
            errors.append(str(error) if str(path) in str(error) else f"{path}: {error}")
            continue
        if info.frame_count and args.start_frame >= info.frame_count:
            errors.append(f"{path}: --start-frame {args.start_frame}: it has {info.frame_count} frames (0-based)")
            continue
        jobs.append(VideoJob(str(path), name, info, processed_frames(info, args.start_frame, args.stride)))
    return jobs, output, errors


def run_many_videos(args: argparse.Namespace) -> int:
    """Several videos, one after the other here or in parallel on Ray (one video per worker at a time)."""
    from tqdm import tqdm

    try:
        if args.ray is not None:
            from ..cluster.workers import check_pool_options, require_ray

            check_pool_options(args.workers, args.gpus_per_worker)
            require_ray()
        else:
            check_local_options(args)
        formats = chosen_formats(args)
        check_resumable(args, formats)
        jobs, output, input_errors = plan_videos(args)
        spec = spec_from_args(args).check_for_video()
        done = 0
        if args.resume:
            kept = [job for job in jobs if not video_result_complete(output, job.name, job.frames, not args.no_draw)]
            done, jobs = len(jobs) - len(kept), kept
        if args.ray is not None:
            from ..cluster.workers import connect, pool_size

            connect(args.ray or None)
            workers, gpus = pool_size(args.workers, args.gpus_per_worker)
        else:
            run = load_video_run(spec) if jobs else None
    except GroundedSam2Error as error:
        return usage_error(error)
    for failure in input_errors:
        report(f"error: {failure}", sys.stderr)
    if not jobs and not done:
        print("error: no input videos found", file=sys.stderr)
        return EXIT_FAILURES
    prepare_output_folder(output, "--output")
    started = time.perf_counter()
    outcomes: list[VideoOutcome] = []
    stopped = None
    progress = tqdm(total=len(jobs), desc="videos", unit="video", disable=args.quiet)
    try:
        if args.ray is not None:
            from ..cluster.videos import track_videos_on_ray

            for outcome in track_videos_on_ray(jobs, spec.to_dict(), output, args.start_frame, args.stride,
                                               not args.no_draw, workers, gpus, formats=formats):
                outcomes.append(outcome)
                for warning in outcome.warnings:
                    tqdm.write(printable(warning, sys.stderr), file=sys.stderr)
                progress.update(1)
        else:
            for job in jobs:
                outcome = track_video(run, job.source, job.info, output, job.name, args.start_frame, args.stride,
                                      not args.no_draw, warn=lambda line: tqdm.write(printable(line, sys.stderr),
                                                                                     file=sys.stderr),
                                      formats=formats)
                outcomes.append(outcome)
                progress.update(1)
                if outcome.interrupted:
                    raise outcome.interrupted_by
    except KeyboardInterrupt as stop:
        stopped = stop
    except Exception as error:  # noqa: BLE001 - the Ray pipeline itself failed: the videos left are not done
        from .image import root_cause

        report(f"error: the Ray run failed: {root_cause(error)}", sys.stderr)
        input_errors.append(f"the Ray run failed ({root_cause(error)}); {len(jobs) - len(outcomes)} videos not processed")
    progress.close()
    order = {str(job.source): i for i, job in enumerate(jobs)}
    outcomes.sort(key=lambda outcome: order.get(outcome.source, 0))
    failures = list(input_errors) + [f"{o.source}: {o.error}" if o.error else f"{o.source}: frames missing"
                                     for o in outcomes if o.failed]
    for outcome in outcomes:
        report(f"{outcome.source}:")
        report("\n".join("  " + line for line in outcome.lines()))
    seconds = time.perf_counter() - started
    if done:
        print(f"already done:     {done} (--resume: complete results kept)")
    print(f"videos processed: {sum(1 for o in outcomes if o.error is None)}" + (" (interrupted)" if stopped else ""))
    print(f"failures:         {len(failures)}")
    print(f"time:             {seconds:.1f} s")
    for failure in failures:
        report(f"  failed: {failure}")
    if stopped is not None:
        return stopped_status(stopped)
    return EXIT_FAILURES if failures else EXIT_OK


def check_camera(index: int) -> None:
    """A usage error, before any model loads, if camera ``index`` cannot be opened."""
    import cv2

    capture = cv2.VideoCapture(index)
    try:
        if not capture.isOpened():
            raise InputError(f"--input {index}: no camera with this index can be opened")
    finally:
        capture.release()
