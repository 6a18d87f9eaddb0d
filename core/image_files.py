"""Label image files in bulk: decode, label in batches, write each image's files; the loop of ``gsam2 image``.

One function, :func:`label_files`, used by a local run (``gsam2 image|autolabel``, in the command's
process) and by every Ray actor of ``--ray`` (on its share of the files): the same decoding, the same
batches and the same writer, so both write the same bytes. It is :func:`~.engine.run_pipelined` with the
image-file steps filled in: files decoded ahead in a thread, the processors' work one batch ahead of the
models, masks, RLE, JSON and drawing made and written in a thread behind them.

Example::

    run = Run(spec).load_for_images()
    for outcome in label_files(run, "images", [(Path("a.jpg"), "a")], Path("out")):
        print(outcome.item, outcome.error or outcome.value.objects)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .engine import Outcome, run_pipelined
from .errors import DiskFullError, GroundedSam2Error, OutputError
from .exports import write_image_outputs
from .images import load_image
from .run import Run

#: ``(image file, output name)``: the name is the stem of its ``.json`` / ``.jpg`` (planned once per run).
ImageFile = tuple[Path, str]


@dataclass
class WrittenImage:
    """A labelled image's files are written: its number of objects, its record, and the dataset-file extras."""

    objects: int
    record: dict[str, Any]
    polygons: list | None = None  # YOLO outlines, made here (off the caller's thread) when "yolo" is asked
    several_frames: bool = False  # the file had several frames (animated GIF, multi-page TIFF); the first was used


def label_files(
    run: Run,
    work: Literal["images", "autolabel"],
    files: Iterable[ImageFile],
    output: Path,
    draw: bool = True,
    formats: Sequence[str] = ("json",),
    model_lock: threading.Lock | None = None,
    isolate_write_errors: bool = False,
    decode_workers: int | None = None,
    encode_workers: int | None = None,
) -> Iterator[Outcome[ImageFile]]:
    """Label ``files`` with ``run`` (loaded for images) and write their files; one outcome per file, in order.

    Args:
        run: the spec's loaded models (:meth:`~.run.Run.load_for_images`).
        work: ``"images"`` (detect with the prompt, segment) or ``"autolabel"`` (caption, ground, segment).
        files: ``(path, output name)`` pairs.
        output: the output folder (it exists).
        draw: also write ``<name>.jpg`` with the masks and boxes drawn.
        formats: ``"json"`` writes ``<name>.json``; ``"yolo"`` makes the outlines for the YOLO files.
        model_lock: held around each batch's model work, when several calls share ``run`` at once (a Ray
            actor taking several calls: the others prepare their batches while one is on the accelerator).
        isolate_write_errors: any error while writing is that image's failure (``Outcome.error``), but a
            full disk (:class:`~.errors.DiskFullError`), which stops the run: every later write would fail
            too. Without it only our own errors (:class:`~.errors.GroundedSam2Error`, e.g. a folder where
            the file goes) are the image's failure, and anything else stops the run.

    An outcome's ``value`` is a :class:`WrittenImage`; a failure's ``error`` is one line and ``stage`` says
    where (``"load"`` errors name the file already).
    """
    from .formats.images import yolo_outlines

    several_frames: set[Path] = set()
    lock = model_lock or nullcontext()

    def load(item: ImageFile):
        return load_image(item[0], on_several_frames=lambda: several_frames.add(item[0]))

    if work == "autolabel":
        prepare = None

        def infer(images):
            with lock:
                found = run.auto_label(images)
            return [(result.detections, {"caption": result.caption}) for result in found]

    else:
        prepare = run.preparation_steps()  # one batch ahead of the models (core/engine.py)

        def infer(images, prepared=None):
            with lock:
                found = run.label_images(
                    images,
                    prepared=prepared,
                    compact_masks=True,  # crops: the JSON's RLE and the drawing never need full frames
                    defer_masks=True,  # masks are made in the write thread, not in the model's
                )
            return [(detections, {}) for detections in found]

    def write(item: ImageFile, image, labelled) -> WrittenImage:
        (path, name), (detections, extra) = item, labelled
        try:
            count, record = write_image_outputs(
                output, name, path, image, detections, extra, draw=draw, json_file="json" in formats
            )
            polygons = yolo_outlines(record, formats)
        except (GroundedSam2Error, DiskFullError):
            raise
        except Exception as error:
            if not isolate_write_errors:
                raise
            raise OutputError(f"{type(error).__name__}: {error}") from error
        return WrittenImage(count, record, polygons, path in several_frames)

    yield from run_pipelined(
        files,
        load,
        infer,
        write,
        batch_size=run.batch_size,
        prepare=prepare,
        decode_workers=decode_workers,
        encode_workers=encode_workers,
    )


def failure_line(outcome: Outcome[ImageFile]) -> str:
    """A failed outcome's summary line: a load error names the file already, others get it prefixed."""
    return outcome.error if outcome.stage == "load" else f"{outcome.item[0]}: {outcome.error}"
