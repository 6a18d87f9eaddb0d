"""``gsam2 image|autolabel --ray``: label image files on a pool of Ray actors, each running a local run's loop.

The driver has planned the inputs and their output names (:func:`~..cli.inputs.plan_image_run`, as a local
run does); here they become rows of ``(index, path, name)`` in blocks, and a fixed pool of actors
(:class:`ImageWorker`) takes the blocks as Ray Data streams them. Each actor holds the spec's models,
loaded once, and runs on its block exactly what a local run runs on all the files
(:func:`~..core.image_files.label_files`): files decoded ahead in a thread, the processors' work one batch
ahead of the models, masks, RLE, JSON and drawing written atomically in a thread behind them. So the files
are the same bytes as a local run's.

Why decoding and writing happen in the actor, not in Ray Data tasks of their own: a decoded 1 MP image is
3 MB and its mask logits 2.6 MB, against ~0.2 MB of JPEG. Moving them through the object store between
separate decode, label and write stages cost about 55 ms of host CPU per image (Arrow blocks, pickling,
copies), more than all of our own work on it (~41 ms), and capped 4 T4-class actors on a 2-core host at
0.68 of their ceiling (bench/ray_scaling.py; bench/README.md has both layouts' figures). Inside the actor
the image never leaves the process that decodes it, reads happen where the GPU is (from shared storage,
on any node), and only a path goes in and a few numbers come out.

Each row comes back to the driver as an :class:`ImageResult`: that input's object count, or its one error
line. A failure is that input's, never the run's, but for a full disk (every later write would fail too):
the actor's call raises it, Ray Data does not retry an exception raised by the callable (it retries only
``RaySystemError``, ``_add_system_error_to_retry_exceptions`` in ray/data/_internal/remote_fn.py, Ray 2.58),
and the driver stops the run with that line (:func:`~..cli.image.label_on_ray`), as a local run stops.

Each actor call is one row that lists a chunk of consecutive inputs: one batch of the spec's batch size or,
without one, :data:`~..core.pipeline.DEFAULT_BATCH_SIZE` inputs (one batch on a GPU worker, four of one on a
CPU-only one). Batches are made by position in the local run too (:func:`~..core.engine.run_pipelined`), so
every input is batched with the same others as in a local run: batching can change a model's numbers
(padding), and the outputs must be the same bytes. (A row per input would not do: Ray Data splits rows
into blocks evenly and joins blocks into batches, and the batches would shift.)
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .workers import RunWorker, crash_once_if_asked, worker_options

@dataclass
class ImageResult:
    """What one input came to: its number of objects, or an error line (``path: reason``)."""

    index: int
    objects: int = 0
    error: str | None = None
    several_frames: bool = False
    dataset_row: bytes = b""  # pickled (record, YOLO polygons) for the driver's COCO / YOLO files, when asked


class ImageWorker(RunWorker):
    """One actor: the spec's models, and the local run's loop over each block of files it is given.

    Three calls run at once (:func:`~.workers.worker_options` with ``overlap=True``): while one block's batch
    is on the accelerator (under the model lock), the next block's files are decoded and prepared, and a
    third block waits in the actor for its turn, not on the driver (both: :class:`CallsInTurn`).
    """

    def __init__(self, spec: dict[str, Any], work: str, output: str, draw: bool, formats: Sequence[str] = ("json",),
                 crash_marker: str | None = None):
        from ..core.engine import reuse_freed_buffers

        super().__init__(spec, work, crash_marker)
        self.output, self.draw, self.formats = Path(output), draw, tuple(formats)
        self.collect = any(name in self.formats for name in ("coco", "yolo"))
        reuse_freed_buffers()  # as the local command: no page faults on every batch's large buffers
        # One batch on the accelerator at a time, though three calls run at once (worker_options(overlap=True)).
        self.turns = CallsInTurn()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """One row, one chunk of inputs (``index``, ``path``, ``stem``: lists) -> one row per input."""
        from ..core.image_files import failure_line, label_files

        crash_once_if_asked()
        [indices], [paths], [stems] = batch["index"], batch["path"], batch["stem"]
        files = [(Path(path), str(stem)) for path, stem in zip(paths, stems)]
        objects, errors, several, rows = [], [], [], []
        with self.turns.turn() as accelerator:
            for outcome in label_files(self.run, self.work, files, self.output, draw=self.draw,
                                       formats=self.formats, model_lock=accelerator, isolate_write_errors=True,
                                       decode_workers=1, encode_workers=1):
                written = outcome.value
                errors.append(failure_line(outcome) if outcome.error is not None else "")
                objects.append(written.objects if written else 0)
                several.append(bool(written and written.several_frames))
                rows.append(pickle.dumps((written.record, written.polygons)) if written and self.collect else b"")
        return {"index": np.asarray(indices, dtype=np.int64), "objects": np.array(objects),
                "error": np.array(errors, dtype=object), "several": np.array(several),
                "dataset_row": np.array(rows, dtype=object)}


class CallsInTurn:
    """An actor's calls start their host work one after another: each once the call before it takes the model lock.

    Ray Data hands every actor three calls at once when a run starts (:func:`~.workers.worker_options`).
    Started together, their decoding and preparation share the host's cores, so the first batch reaches the
    accelerator only when all three are nearly ready: with 4 actors on 2 cores, about a second of every
    accelerator idle (``fill`` in bench/ray_scaling.py, 0.09 of a 240-image run). Taking turns, the first
    call has the cores first; the next starts decoding once the first takes the model lock (its batch is
    decoded; the processors' work it waits for under the lock may still be finishing), and so on: the local
    run's order, one batch decoded and prepared ahead of the models. The third call's block waits in the
    actor, not on the driver. A call that ends without taking the lock (every input failed to load, or an
    error) lets the next one start as it ends.

    ``model_lock``: the lock around a batch's model work (default: a new one).

    Example::

        turns = CallsInTurn()
        with turns.turn() as accelerator:    # waits until the previous call took the lock (or ended)
            with accelerator:                # the model lock; taking it lets the next call start
                ...
    """

    def __init__(self, model_lock: threading.Lock | None = None):
        self._model_lock = model_lock or threading.Lock()
        self._order = threading.Lock()
        self._previous = threading.Event()
        self._previous.set()

    @contextmanager
    def turn(self) -> Iterator[AbstractContextManager]:
        """Wait until the previous call took the model lock (or ended); yield the lock: taking it starts the next."""
        with self._order:
            previous, mine = self._previous, threading.Event()
            self._previous = mine
        try:
            previous.wait()
            yield _LockThenSignal(self._model_lock, mine)
        finally:
            mine.set()  # a call whose inputs all failed to load never takes the lock


class _LockThenSignal:
    """``model_lock``, and ``event`` set once it is taken."""

    def __init__(self, lock: threading.Lock, event: threading.Event):
        self.lock, self.event = lock, event

    def __enter__(self) -> None:
        self.lock.acquire()
        self.event.set()

    def __exit__(self, *exc_info) -> None:
        self.lock.release()


def whole_batch_chunks(indices: Sequence[int], batch_size: int | None) -> list[list[int]]:
    """``indices`` in consecutive chunks of one batch (``batch_size``), the last one shorter.

    Without a batch size the chunk is :data:`~..core.pipeline.DEFAULT_BATCH_SIZE`: one batch on a GPU
    worker, whole batches of one on a CPU-only one, so the chunks hold whole batches whichever device the
    worker has.

    Example: ``whole_batch_chunks(range(5), 2)`` -> ``[[0, 1], [2, 3], [4]]``.
    """
    from ..core.pipeline import DEFAULT_BATCH_SIZE

    size = batch_size or DEFAULT_BATCH_SIZE
    indices = list(indices)
    return [indices[start:start + size] for start in range(0, len(indices), size)]


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
    crash_marker: str | None = None,
    formats: Sequence[str] = ("json",),
) -> Iterator[ImageResult]:
    """Label ``files[i]`` for ``i`` in ``indices`` on a pool of actors; yield each input's result as it lands.

    ``spec`` is :meth:`RunSpec.to_dict`; ``work`` is ``"images"`` or ``"autolabel"``. Results come in the
    order they finish, not the input order. Ray must be connected (:func:`~.workers.connect`).
    """
    import ray

    if not indices:
        return
    rows = [
        {"index": part, "path": [str(files[i]) for i in part], "stem": [names[i] for i in part]}
        for part in whole_batch_chunks(indices, spec.get("batch_size"))
    ]
    # One chunk per call: an actor's calls then take turns on its accelerator batch by batch (calls of
    # two batches left it idle for 0.5-1 s now and then, bench/ray_scaling.py).
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        ImageWorker,
        fn_constructor_args=(spec, work, str(output), draw, tuple(formats), crash_marker),
        batch_size=1,
        **worker_options(workers, gpus_per_worker, cpus_per_worker, overlap=True),
    )
    for row in dataset.iter_rows():
        yield ImageResult(int(row["index"]), int(row["objects"]), row["error"] or None, bool(row["several"]),
                          row["dataset_row"])

