"""A pipelined runner for bulk image work: decode ahead, infer in batches, encode in the background.

One loop that loads an image, runs the models, encodes the result and writes it,
one batch after another, leaves the accelerator idle while the host decodes
and encodes. :func:`run_pipelined` overlaps the three host stages with the
model stage::

    decode (worker threads, up to `prefetch` items ahead)
        -> infer (the caller's thread, one batch at a time: models are not shared between threads)
        -> encode (worker threads: RLE, JSON, drawing, file writes)
        -> outcomes, yielded in input order

While the model runs (a CUDA wait or a sleep releases the GIL), the workers
decode the next batch and encode the previous one. Memory is bounded by the
windows (``prefetch`` loaded inputs, ``encode_window`` results being encoded),
not by the number of inputs. One item's failure (unreadable input, a model
error isolated to it, an encoding error) is that item's outcome; the run goes
on. An adapter supplies the three stage functions and consumes the outcomes:
the CLI writes files, the FiftyOne operators write ``set_values`` batches.
The stage functions take and return plain values, so a distributed runner can
later run them in other processes.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import GroundedSam2Error
from .pipeline import label_isolating_failures

Item = TypeVar("Item")


@dataclass
class Outcome(Generic[Item]):
    """One input's end: the encoded value, or why it failed (one line)."""

    item: Item
    value: Any = None
    error: str | None = None
    stage: str | None = None  # where it failed: "load", "infer" or "encode"


class _Slot:
    """An item's place in the output order, filled in as it passes the stages."""

    def __init__(self, item):
        self.item = item
        self.value: Any = None
        self.error: str | None = None
        self.stage: str | None = None
        self.encoding: Future | None = None
        self.inferred = False  # past the model (or failed before it)

    @property
    def ready(self) -> bool:
        return self.encoding is None or self.encoding.done()


def default_workers() -> int:
    """Host threads per stage: enough to overlap decoding and encoding with the model, few on a small host."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def run_pipelined(
    items: Iterable[Item],
    load: Callable[[Item], Any],
    infer: Callable[..., Sequence[Any]],
    encode: Callable[[Item, Any, Any], Any] | None = None,
    batch_size: int = 1,
    prepare: Callable[[Sequence[Any]], Any] | Sequence[Callable[[Sequence[Any]], Any]] | None = None,
    decode_workers: int | None = None,
    encode_workers: int | None = None,
    prefetch: int | None = None,
    encode_window: int | None = None,
) -> Iterator[Outcome[Item]]:
    """Run ``load`` → ``infer`` (batched) → ``encode`` over ``items``; yield one :class:`Outcome` per item, in order.

    Args:
        items: the inputs (file paths, sample rows...); consumed lazily.
        load: one item → its loaded input (e.g. an RGB array). Runs in decode workers.
            A :class:`GroundedSam2Error` is that item's failure.
        infer: a batch of loaded inputs → one result per input. Runs in the caller's
            thread; a failing batch is retried item by item, so only the items that
            fail on their own fail (:func:`~.pipeline.label_isolating_failures`).
        encode: ``(item, loaded, result)`` → the outcome's value (default: the result).
            Runs in encode workers; a :class:`GroundedSam2Error` is that item's failure.
        batch_size: loaded inputs per ``infer`` call.
        prepare: a batch of loaded inputs → what ``infer`` needs besides them (the
            processors' output). Runs in its own thread one batch ahead, and
            ``infer`` is then called as ``infer(batch, prepared)``; ``prepared`` is
            ``None`` when ``prepare`` failed or when failing items are retried one
            by one, and ``infer`` must then prepare for itself. A sequence of
            steps (e.g. the detector's processor, then SAM 2's) runs in that order
            in the same thread, and ``prepared`` is then a tuple of their futures:
            ``infer`` waits for each step only when it needs it, so the model can
            start on the first step's output while the next is still being made
            (what the accelerator waits for before the first batch). A failed
            step raises where ``infer`` reads it, and the batch is retried item by
            item with ``prepared=None``.
        decode_workers, encode_workers: threads per host stage (default :func:`default_workers`).
        prefetch: inputs decoded ahead of the model (default: two batches).
        encode_window: results being encoded before the oldest is waited for (default: two batches).

    Any other exception stops the run and propagates, as in a plain loop.
    """
    decode_workers = decode_workers or default_workers()
    encode_workers = encode_workers or default_workers()
    prefetch = prefetch or 2 * batch_size
    encode_window = encode_window or 2 * batch_size
    source = iter(items)
    loading: deque[tuple[Item, Future]] = deque()
    finishing: deque[_Slot] = deque()  # every item past decoding, in input order

    decoders = ThreadPoolExecutor(decode_workers, thread_name_prefix="gsam2-decode")
    encoders = ThreadPoolExecutor(encode_workers, thread_name_prefix="gsam2-encode")
    steps = [prepare] if callable(prepare) else list(prepare or ())
    preparer = ThreadPoolExecutor(1, thread_name_prefix="gsam2-prepare")  # one thread: steps run in order

    def decode_ahead() -> None:
        while len(loading) < max(prefetch, batch_size):
            try:
                item = next(source)
            except StopIteration:
                return
            loading.append((item, decoders.submit(load, item)))

    def finished(slot: _Slot) -> Outcome[Item]:
        if slot.encoding is not None:
            try:
                return Outcome(slot.item, slot.encoding.result())
            except GroundedSam2Error as failure:
                return Outcome(slot.item, error=str(failure), stage="encode")
        return Outcome(slot.item, slot.value, slot.error, slot.stage)

    def next_batch() -> tuple[list[tuple[_Slot, Any]], list[Future]]:
        """The next batch's loaded inputs (load failures become their outcomes), and its preparation, started.

        Batches are the inputs' positions ``[k * batch_size, (k + 1) * batch_size)``: an input that fails to
        load leaves its batch one smaller, and the next input does not take its place. So a run split into
        parts of whole batches (a Ray actor's block, a FiftyOne shard) batches every input with the same
        others as one run over all of them, and batching can change a model's numbers (padding).
        """
        batch = []
        taken = 0
        while loading and taken < batch_size:
            taken += 1
            item, future = loading.popleft()
            slot = _Slot(item)
            finishing.append(slot)
            try:
                batch.append((slot, future.result()))
            except GroundedSam2Error as failure:
                slot.error, slot.stage, slot.inferred = str(failure), "load", True
            decode_ahead()  # keep the decoders busy while the model works
        inputs = [row[1] for row in batch]
        preparing = [preparer.submit(step, inputs) for step in steps] if batch else []
        return batch, preparing

    def run_model(batch: list[tuple[_Slot, Any]], preparing: list[Future]):
        prepared = None
        if preparing and not callable(prepare):
            prepared = tuple(preparing)  # steps: infer waits for each where it needs it
        elif preparing:
            try:
                prepared = preparing[0].result()
            except Exception:  # noqa: BLE001 - infer prepares for itself and reports the failing items
                prepared = None

        def infer_rows(rows):
            loaded = [row[1] for row in rows]
            if prepare is None:
                return infer(loaded)
            return infer(loaded, prepared if rows is batch else None)

        return label_isolating_failures(infer_rows, batch)

    try:
        decode_ahead()
        upcoming = next_batch()
        while upcoming[0] or loading:
            batch, preparing = upcoming
            upcoming = next_batch()  # decoded and being prepared while the model runs this batch
            if batch:
                try:
                    outcomes = run_model(batch, preparing)
                except BaseException:
                    # Stopped (Ctrl-C, SIGTERM, a worker going away): hand back every item finished
                    # before this batch, so the caller still writes them, then stop.
                    while finishing and finishing[0] is not batch[0][0]:
                        yield finished(finishing.popleft())
                    raise
                for (slot, loaded), result, error in outcomes:
                    slot.inferred = True
                    if error is not None:
                        slot.error, slot.stage = error, "infer"
                    elif encode is None:
                        slot.value = result
                    else:
                        slot.encoding = encoders.submit(encode, slot.item, loaded, result)
            # Hand back what is done, in order; wait only when too much is being encoded.
            while finishing and finishing[0].inferred and (finishing[0].ready or len(finishing) > encode_window):
                yield finished(finishing.popleft())
        while finishing:
            yield finished(finishing.popleft())
    finally:
        decoders.shutdown(wait=True, cancel_futures=True)
        preparer.shutdown(wait=True, cancel_futures=True)
        encoders.shutdown(wait=True, cancel_futures=True)


def reuse_freed_buffers() -> bool:
    """Let glibc keep large freed buffers for reuse instead of returning them to the kernel; ``True`` if set.

    A batch's processor outputs are tens of MB (4 x 3 x 1024 x 1024 floats for
    SAM 2 alone). glibc serves blocks that large with a fresh ``mmap`` and unmaps
    them on ``free``, so every batch pays the kernel to fault in and zero the
    pages again: measured 57-65 -> 45 ms of host CPU per 1 MP image in
    bench/simulated_accelerator.py. Raising ``M_MMAP_THRESHOLD`` and
    ``M_TRIM_THRESHOLD`` (what ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
    set) serves them from the heap. The cost: the process keeps its high-water
    mark of memory until it exits, which suits a bulk command. Process-wide, so
    only the CLI's bulk commands call it; elsewhere (other C libraries, macOS,
    Windows) it does nothing.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no glibc mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))


def freeze_long_lived_objects() -> None:
    """Leave the objects alive now (modules, loaded models) out of every later garbage collection.

    A process that has imported torch, transformers (and Ray) and loaded its models holds 0.5-1 M
    objects that live until it exits, and each full collection walks all of them: ~150 ms for 0.5 M
    (measured here). A labelling loop allocates enough to trigger one every few batches; in 4 Ray
    actors sharing 2 cores the collector was the largest single cost of the actors' host time (8 % of
    it, ``perf``). :func:`gc.freeze` moves them to a permanent generation that collections skip. Call
    it once the models are loaded (a Ray actor: for its whole life); objects created later are
    collected as usual. For a while only, see :func:`long_lived_objects_frozen`.
    """
    import gc

    gc.collect()  # what is garbage already is freed, not frozen
    gc.freeze()


@contextlib.contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """:func:`freeze_long_lived_objects` for the block's duration (a bulk loop in a process that goes on:
    the tests, a notebook calling ``gsam2.cli.main``); the collector sees them again afterwards."""
    import gc

    freeze_long_lived_objects()
    try:
        yield
    finally:
        gc.unfreeze()


_END = object()


def read_ahead(iterable: Iterable[Item], depth: int = 8) -> Iterator[Item]:
    """Iterate ``iterable`` in a background thread, at most ``depth`` items ahead of the consumer.

    For video frames: the next frames decode while SAM 2 tracks this one
    (decoding releases the GIL). An exception in the producer is raised to the
    consumer at the point it happened; closing the iterator early stops the
    producer after at most ``depth`` more items.
    """
    import queue

    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        buffer.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put((_END, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            buffer.put((_END, error))

    producer = threading.Thread(target=produce, name="gsam2-read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            item, error = buffer.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        producer.join(timeout=5)


Result = TypeVar("Result")


def interruptible(call: Callable[..., Result], *args: Any) -> Result:
    """``call(*args)`` in a daemon thread, waited for here, so that Ctrl-C and SIGTERM stop the wait at once.

    For calls that block in C code which never checks for signals: PyAV waiting for
    a URL to answer checks only its own timeouts (``interrupt_cb`` in
    av/container/core.py), and a signal handler's exception raised when it
    returns is lost in its error check (``err_check`` in av/error.py), so the run
    went on. The main thread runs Python's signal handlers; here it only waits
    (in short joins: a plain ``join`` is not woken by signals everywhere), and the
    call ends in the background within its own timeout. Its result is returned,
    its exception raised here.
    """
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, call(*args)))
        except BaseException as error:  # noqa: BLE001 - raised in the caller's thread
            outcome.append((False, error))

    worker = threading.Thread(target=run, name="gsam2-interruptible", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


class WriteBehind:
    """Run output jobs in order, in one background thread, at most ``depth`` jobs behind the caller.

    For video: the JSONL line (mask RLE), the drawing and the MP4 frame of one
    frame are written while SAM 2 tracks the next. One thread keeps the jobs in
    order; ``depth`` bounds the frames held. A job's exception is raised to the
    caller at its next :meth:`submit` or at :meth:`finish`. Use as a context
    manager: leaving it finishes every job submitted so far (also on Ctrl-C),
    so the outputs hold every frame that was handed over.
    """

    def __init__(self, depth: int = 8):
        self.depth = depth
        self._pending: deque[Future] = deque()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="gsam2-write")

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        self._pending.append(self._executor.submit(job, *args))
        while self._pending and (self._pending[0].done() or len(self._pending) > self.depth):
            self._pending.popleft().result()  # a failed job's error surfaces here

    def finish(self) -> None:
        """Wait for every submitted job; raise the first job error."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._executor.shutdown(wait=True, cancel_futures=False)

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.finish()
            return
        # Already failing or stopped: write what was handed over, and report the first error, not a job's.
        with contextlib.suppress(Exception):
            self.finish()
