"""``gsam2 image|autolabel --ray``: label image files as a Ray Data pipeline.

The driver has planned the inputs and their output names (:func:`~..cli.inputs.plan_image_run`, as a local
run does); here they become rows and flow through three stages, streamed with Ray Data's backpressure:

1. **decode** (tasks): read each file into an RGB array (:func:`~..core.images.load_image`);
2. **label** (a fixed pool of actors, :class:`ImageWorker`): each actor holds the spec's models, loaded once,
   and labels its batch (:meth:`~.workers.RunWorker.label`);
3. **write** (tasks): masks, COCO RLE, JSON and drawing, written atomically by the same function a local run
   uses (:func:`~..core.exports.write_image_outputs`), so the files are the same bytes.

Each row comes back to the driver as an :class:`ImageResult`: that input's object count, or its one error
line. A failure is that input's, never the run's.

Batches follow the input order in blocks of the run's batch size (or a multiple of it), so an actor's
batches hold the same images as a local run's would: batching can change a model's numbers (padding), and
the outputs must be the same bytes.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .workers import RunWorker, error_line, worker_options

#: Rows per actor call when the spec sets no batch size: enough to keep an actor busy between calls, few
#: enough that 240 images still spread over 8 actors.
DEFAULT_ROWS_PER_CALL = 4


@dataclass
class ImageResult:
    """What one input came to: its number of objects, or an error line (``path: reason``)."""

    index: int
    objects: int = 0
    error: str | None = None
    several_frames: bool = False
    dataset_row: bytes = b""  # pickled (record, YOLO polygons) for the driver's COCO / YOLO files, when asked


def decode(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Stage 1 (a task): the files of ``batch["path"]`` as RGB arrays; a file that cannot be read gets its error."""
    from ..core import GroundedSam2Error, load_image

    images, errors, several = [], [], []
    for path in batch["path"]:
        flag = []
        try:
            images.append(load_image(Path(path), on_several_frames=lambda: flag.append(True)))
            errors.append("")
        except GroundedSam2Error as error:  # names the file already
            images.append(np.zeros((0, 0, 3), np.uint8))
            errors.append(str(error))
        several.append(bool(flag))
    return {**batch, "image": _objects(images), "height": np.array([image.shape[0] for image in images]),
            "width": np.array([image.shape[1] for image in images]), "error": np.array(errors, dtype=object),
            "several": np.array(several)}


class ImageWorker(RunWorker):
    """Stage 2 (an actor): label the decoded images of a batch; results travel pickled to the write tasks.

    ``keep_images``: pass the decoded images on to the write tasks (they draw on them). Without drawing
    they are left out: putting a batch's images back into the object store cost the actor about 7 ms per
    1 MP image (measured), on the path that keeps its accelerator fed.
    """

    def __init__(self, spec: dict[str, Any], work: str = "images", crash_marker: str | None = None,
                 keep_images: bool = True):
        super().__init__(spec, work, crash_marker)
        self.keep_images = keep_images

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        errors = list(batch["error"])
        images = [image if not errors[i] else None for i, image in enumerate(batch["image"])]
        labelled = []
        for i, result in enumerate(self.label(images)):
            if result.error is not None:
                errors[i] = f"{batch['path'][i]}: {result.error}"
            labelled.append(pickle.dumps((result.detections, result.extra)) if not errors[i] else b"")
        kept = batch if self.keep_images else {k: v for k, v in batch.items() if k != "image"}
        return {**kept, "labelled": _objects(labelled), "error": np.array(errors, dtype=object)}


def write(batch: dict[str, np.ndarray], output: str, draw: bool, formats: Sequence[str] = ("json",)) -> dict[str, Any]:
    """Stage 3 (a task): each image's JSON (and drawing), as a local run writes them; the row's outcome.

    With COCO / YOLO among ``formats``, the row also carries the image's record (and its YOLO outlines, made
    here rather than on the driver) for the driver, which assembles those files in input order.
    """
    from ..core.exports import write_image_outputs
    from ..core.formats.yolo import object_polygon

    collect = any(name in formats for name in ("coco", "yolo"))
    objects, errors, rows = [], list(batch["error"]), []
    for i, path in enumerate(batch["path"]):
        count, row = 0, b""
        if not errors[i]:
            detections, extra = pickle.loads(batch["labelled"][i])
            try:
                image = batch["image"][i] if draw else None
                size = (int(batch["height"][i]), int(batch["width"][i]))
                count, record = write_image_outputs(
                    Path(output), batch["stem"][i], Path(path), image, detections, extra, draw=draw, size=size,
                    json_file="json" in formats,
                )
                if collect:
                    polygons = [object_polygon(obj) for obj in record["annotations"]] if "yolo" in formats else None
                    row = pickle.dumps((record, polygons))
            except Exception as error:  # noqa: BLE001 - this image's failure (a folder in the way, a full disk)
                errors[i] = f"{path}: {error_line(error)}"
        objects.append(count)
        rows.append(row)
    return {"index": batch["index"], "objects": np.array(objects), "error": np.array(errors, dtype=object),
            "several": batch["several"], "dataset_row": _objects(rows)}


def label_files_on_ray(
    files: Sequence[Path],
    names: Sequence[str],
    indices: Sequence[int],
    spec: dict[str, Any],
    work: str,
    output: Path,
    draw: bool,
    workers: int,
    gpus_per_worker: float,
    cpus_per_worker: float | None = None,
    rows_per_call: int | None = None,
    crash_marker: str | None = None,
    formats: Sequence[str] = ("json",),
) -> Iterator[ImageResult]:
    """Run the three stages over ``files[i]`` for ``i`` in ``indices``; yield each input's result as it lands.

    ``spec`` is :meth:`RunSpec.to_dict`; ``work`` is ``"images"`` or ``"autolabel"``. Results come in the
    order they finish, not the input order. Ray must be connected (:func:`~.workers.connect`).
    """
    import ray

    if not indices:
        return
    batch = spec.get("batch_size") or 1
    rows = rows_per_call or batch * max(1, math.ceil(DEFAULT_ROWS_PER_CALL / batch))
    items = [{"index": i, "path": str(files[i]), "stem": names[i]} for i in indices]
    dataset = (
        # One block per actor call: an actor's batch is exactly these rows, in input order (see the module doc).
        ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / rows))
        .map_batches(decode, batch_size=rows, num_cpus=1)
        .map_batches(
            ImageWorker,
            fn_constructor_args=(spec, work, crash_marker, draw),
            batch_size=rows,
            **worker_options(workers, gpus_per_worker, cpus_per_worker, overlap=True),
        )
        .map_batches(write, fn_kwargs={"output": str(output), "draw": draw, "formats": tuple(formats)},
                     batch_size=rows, num_cpus=1)
    )
    for row in dataset.iter_rows():
        yield ImageResult(int(row["index"]), int(row["objects"]), row["error"] or None, bool(row["several"]),
                          row["dataset_row"])


def _objects(values: list) -> np.ndarray:
    """A 1-D object array of ``values`` (``np.array`` would try to stack equal-shaped images into one array)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array
