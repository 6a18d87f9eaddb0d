"""``gsam2 image`` and ``gsam2 autolabel``: label image files in bulk through the engine."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core import GroundedSam2Error, detections_to_record, draw_detections, load_image
from ..core.errors import DiskFullError, OutputError
from ..core.outputs import GSAM2_MARK, atomic_save, atomic_write_text, prepare_output_folder
from ..core.run import Run
from .console import EXIT_FAILURES, EXIT_OK, printable, report, stopped_status, usage_error
from .inputs import ImageRunPlan, plan_image_run
from .options import spec_from_args


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


def run_image(args: argparse.Namespace) -> int:
    try:
        plan = plan_image_run(args)
        run = Run(spec_from_args(args))
        run.load_for_images(check_prompt=True)
        prepare = run.preparation_steps()  # one batch ahead of the models (core/engine.py)
    except GroundedSam2Error as error:
        return usage_error(error)

    def label_images(images, prepared=None):
        results = run.label_images(
            images,
            prepared=prepared,
            compact_masks=True,  # crops: the JSON's RLE and the drawing never need full frames
            defer_masks=True,  # made in the encode workers (write), not in the model's thread
        )
        return [(detections, {}) for detections in results]

    return label_image_files(args, plan, run.batch_size, label_images, prepare, phrases=run.phrases())


def run_autolabel(args: argparse.Namespace) -> int:
    try:
        plan = plan_image_run(args)
        run = Run(spec_from_args(args)).load_for_images()
    except GroundedSam2Error as error:
        return usage_error(error)

    def label_images(images):
        return [(result.detections, {"caption": result.caption}) for result in run.auto_label(images)]

    return label_image_files(args, plan, run.batch_size, label_images)


def label_image_files(
    args: argparse.Namespace, plan: ImageRunPlan, batch_size: int, label_images, prepare=None, phrases=()
) -> int:
    """The bulk loop of ``gsam2 image`` and ``gsam2 autolabel``: load, label, write labels (+ drawing), summarise.

    ``label_images`` turns a batch of RGB arrays into ``(detections, extra
    JSON fields)`` per image. A file that cannot be read, or a batch that
    fails, is reported and the run goes on. Every file is written under a
    temporary name and renamed, so none is ever left half-written; the
    dataset files (``--format coco|yolo``) are assembled at the end, also
    when the run is interrupted, from the images finished. ``phrases``: the
    prompt's, the first classes of those files, in prompt order.
    """
    from ..core.formats import ImageDatasetWriter

    from tqdm import tqdm

    files, output = plan.files, plan.output
    for failure in plan.input_errors:
        report(f"error: {failure}", sys.stderr)
    summary = RunSummary(failures=list(plan.input_errors))
    if not files:
        print("error: no input images found", file=sys.stderr)
        return EXIT_FAILURES
    prepare_output_folder(output, "--output")
    dataset = ImageDatasetWriter(output, plan.formats, phrases)

    started = time.perf_counter()
    progress = tqdm(total=len(files), desc="images", unit="img", disable=args.quiet)
    try:
        label_batches(args, plan, batch_size, label_images, summary, progress, prepare, dataset)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: every file written so far is complete
        progress.close()
        close_dataset(dataset, summary)
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
    close_dataset(dataset, summary)
    summary.seconds = time.perf_counter() - started
    report("\n".join(summary.lines()))
    return EXIT_FAILURES if summary.failures else EXIT_OK


def close_dataset(dataset, summary: RunSummary) -> None:
    """Assemble the dataset files (COCO, YOLO's data.yaml) from the images done; a failure is the summary's."""
    try:
        dataset.close()
    except (GroundedSam2Error, DiskFullError) as error:  # e.g. a full disk while the COCO file is assembled
        summary.failures.append(str(error))
        report(f"error: {error}", sys.stderr)


def label_batches(
    args, plan: ImageRunPlan, batch_size: int, label_images, summary: RunSummary, progress, prepare=None, dataset=None
) -> None:
    """Decode ahead, label in batches, encode and write in the background (:func:`~.core.engine.run_pipelined`)."""
    from PIL import Image
    from tqdm import tqdm

    from ..core.engine import reuse_freed_buffers, run_pipelined
    from ..core.masks import finish_masks

    output = plan.output
    reuse_freed_buffers()  # no page faults on every batch's large buffers (a bulk process keeps its peak)

    several_frames: set[Path] = set()

    def load(item):
        return load_image(item[0], on_several_frames=lambda: several_frames.add(item[0]))

    def write(item, image, labelled):
        """Encode (RLE, JSON, drawing, YOLO outlines) and write one image's own files.

        Returns its number of objects, its record and its YOLO polygons: the
        dataset files are fed in input order by the caller's loop.
        """
        (path, stem), (detections, extra) = item, labelled
        detections = finish_masks(detections)  # SAM 2's logits -> mask crops, off the model's thread
        record = {**detections_to_record(detections, path, image.shape[:2]), **extra}
        if "json" in plan.formats:
            atomic_write_text(output / f"{stem}.json", json.dumps(record, indent=2))
        polygons = dataset.encode(record) if dataset is not None else None
        if not args.no_draw:
            drawing = Image.fromarray(draw_detections(image, detections))
            atomic_save(  # the comment tells a later run this file is ours to replace (check_not_foreign)
                output / f"{stem}.jpg",
                lambda temporary: drawing.save(temporary, "JPEG", quality=90, comment=GSAM2_MARK),
            )
        return len(detections), record, polygons

    items = list(zip(plan.files, plan.names))
    for outcome in run_pipelined(items, load, label_images, write, batch_size=batch_size, prepare=prepare):
        path = outcome.item[0]
        if outcome.error is not None:  # that image's failure; the others of its batch still count
            # A load error names the file already; a labelling or encoding error gets it prefixed.
            message = outcome.error if outcome.stage == "load" else f"{path}: {outcome.error}"
            summary.failures.append(message)
            tqdm.write(printable(f"error: {message}", sys.stderr), file=sys.stderr)
        else:
            count, record, polygons = outcome.value
            if dataset is not None:  # in input order: ids and classes are the same on every run
                try:
                    dataset.add(path, outcome.item[1], record, polygons)
                except OutputError as error:  # that image's label file or link (a full disk stops the run)
                    summary.failures.append(f"{path}: {error}")
                    tqdm.write(printable(f"error: {summary.failures[-1]}", sys.stderr), file=sys.stderr)
                    progress.update(1)
                    continue
            summary.images += 1
            summary.objects += count
            if path in several_frames:  # in input order (the decode workers finish in any order)
                summary.first_frame_only.append(str(path))
        progress.update(1)
