"""How an operator's work runs: in the App, as a delegated run, or from Python.

Every operator splits its ``execute`` into ``prepare(ctx)``, which validates the
parameters and loads the models (raising :class:`GroundedSam2Error` for what a
user got wrong), and the work it returns: a generator that yields
:class:`Progress` after each batch or video and returns the run's summary. This
module drives that work three ways:

* **In the App, immediately** (``Execute``): ``execute`` returns a generator
  (the operators set ``execute_as_generator``), so FiftyOne streams each
  ``set_progress`` to the App's progress bar as it happens. FiftyOne's own
  ``@voxel51/utils/compute_metadata`` reports progress the same way. A
  ``ctx.set_progress`` call in an immediate run only reaches the browser's
  console (``ExecutionContext.set_progress`` falls back to ``self.log``). The
  stream also runs outside FiftyOne's ``operator_timeout`` (10 minutes), which
  wraps only the call that returns the generator
  (``execute_or_delegate_operator`` in ``fiftyone/operators/executor.py``).
  A known user error becomes one line in the result dialog, since the App shows
  an exception only as "Error occurred during operator execution" over its
  full traceback; the App server's log gets the traceback.
* **Delegated** (``Schedule``, or ``delegate=True``): the work runs to the end
  in the worker, its progress is stored on the run, and the summary is the
  run's result. Errors raise, so FiftyOne marks the run failed.
* **From Python** (``op(dataset, ...)``): the same work runs in the caller's
  process and thread, with a progress bar, however long it takes, and errors
  raise there. ``foo.execute_operator`` would go through the App's immediate
  path and its 10-minute timeout, which leaves the work running after the call
  has raised ``TimeoutError``.

The image operators' work is :func:`label_samples`, the per-sample loop they
share: read the images, label them batch by batch, write each batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fiftyone.core.utils as fou
import fiftyone.operators as foo
import fiftyone.operators.types as types

from ..core import GroundedSam2Error, load_image
from .dataset_writes import clear_mask_files, mask_paths_for, write_all
from .sharding import fail_abandoned_runs
from .summaries import run_summary

logger = logging.getLogger(__name__)  # a child of "fiftyone" when FiftyOne loads the plugin: the server log


@dataclass(frozen=True)
class Progress:
    """How far a run is: ``done`` of ``total`` items (``done`` may be fractional inside a video)."""

    done: float
    total: int
    what: str = "samples"

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 1.0

    @property
    def label(self) -> str:
        return f"{int(self.done)}/{self.total} {self.what}"


Work = Generator[Progress, None, dict[str, Any]]
Prepared = Work | dict[str, Any]


def drive(work: Work, on_progress: Callable[[Progress], None]) -> dict[str, Any]:
    """Run ``work`` to the end, handing each progress report to ``on_progress``; return its summary."""
    while True:
        try:
            progress = next(work)
        except StopIteration as finished:
            return finished.value or {}
        on_progress(progress)


def execute(ctx, prepare: Callable[[], Prepared], outputs: types.Property) -> dict[str, Any] | Iterator:
    """The body of every operator's ``execute``: delegated runs return the summary, App runs stream."""
    if ctx.delegated:
        try:
            prepared = prepare()
            if isinstance(prepared, dict):
                return prepared
            return drive(prepared, lambda p: ctx.set_progress(progress=p.fraction, label=p.label))
        except Exception:
            logger.exception("%s failed on dataset %r", ctx.operator_uri, ctx.dataset.name)
            raise
    return stream(ctx, prepare, outputs)


def stream(ctx, prepare: Callable[[], Prepared], outputs: types.Property) -> Iterator:
    """An immediate run, as the messages FiftyOne streams to the App."""
    try:
        prepared = prepare()
        if isinstance(prepared, dict):
            summary = prepared
        else:
            summary = yield from _progress_messages(ctx, prepared)
    except GroundedSam2Error as error:
        logger.warning("%s on dataset %r: %s", ctx.operator_uri, ctx.dataset.name, error)
        summary = {"error": str(error), "summary": f"**Could not run:** {error}"}
    except Exception as error:
        logger.exception("%s failed on dataset %r", ctx.operator_uri, ctx.dataset.name)
        summary = {
            "error": f"{type(error).__name__}: {error}",
            "summary": f"**Failed:** {type(error).__name__}: {error}\n\nThe App server's log has the traceback.",
        }
    yield ctx.trigger("reload_dataset")
    yield ctx.ops.show_output(outputs.to_json(), summary)


def _progress_messages(ctx, work: Work) -> Generator[Any, None, dict[str, Any]]:
    while True:
        try:
            progress = next(work)
        except StopIteration as finished:
            return finished.value or {}
        yield ctx.trigger("set_progress", {"progress": progress.fraction, "label": progress.label})


# ---------------------------------------------------------------- from Python


def run_in_python(operator: foo.Operator, sample_collection, params: dict[str, Any], delegate: bool = False):
    """``op(dataset, ...)``: run in this process to the end with a progress bar, or queue a delegated run.

    Returns the run's summary (``processed``, ``objects``, ``failed``, ...), or
    for ``delegate=True`` FiftyOne's ``ExecutionResult`` of the queued run.
    """
    request = {"view": sample_collection.view(), "params": params}
    if delegate:
        return foo.execute_operator(operator.uri, request, request_delegation=True)
    ctx = _python_context(operator, sample_collection, params)
    prepared = operator.prepare(ctx)
    if isinstance(prepared, dict):
        return prepared
    bar = None
    try:

        def show(progress: Progress) -> None:
            nonlocal bar
            if bar is None:
                bar = fou.ProgressBar(total=progress.total)
                bar.start()
            bar.set_iteration(int(progress.done))

        return drive(prepared, show)
    finally:
        if bar is not None:
            bar.close()


def _python_context(operator: foo.Operator, sample_collection, params: dict[str, Any]):
    """The context FiftyOne builds for a run: secrets resolved and the parameters validated against the form."""
    from fiftyone.core.view import DatasetView
    from fiftyone.operators.executor import ExecutionResult, prepare_operator_executor

    view = sample_collection.view() if not isinstance(sample_collection, DatasetView) else sample_collection
    request_params = {"dataset_name": view._root_dataset.name, "view": view._serialize(), "params": params}
    coroutine = prepare_operator_executor(operator.uri, request_params)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        prepared = asyncio.run(coroutine)
    else:  # a notebook's loop is running: resolve in a thread of our own
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            prepared = pool.submit(asyncio.run, coroutine).result()
    if isinstance(prepared, ExecutionResult):  # the parameters fail the form's validation
        errors = prepared.validation_ctx.errors if prepared.validation_ctx else []
        detail = "; ".join(f"{e.path.lstrip('.')}: {e.reason}" for e in errors) or prepared.error
        from ..core import InputError

        raise InputError(f"{operator.name}: invalid parameters: {detail}")
    return prepared[2]


# ---------------------------------------------------------------- the image operators' batch loop


def label_samples(
    ctx,
    view,
    rows: list[tuple],
    settings: dict[str, Any],
    source: str,
    label_batch: Callable[..., list[tuple[Any, list[dict[str, Any]] | None]]],
    prepare: Callable[[list[tuple]], Any] | Sequence[Callable[[list[tuple]], Any]] | None = None,
) -> Work:
    """The batch loop both image operators share.

    ``rows`` are ``(sample_id, filepath, payload)``. For every batch, images are
    loaded (a sample whose media is missing or unreadable is recorded in the
    error field and skipped), ``label_batch`` turns the loaded
    ``(sample_id, image, payload)`` rows into ``(sv.Detections, extra
    attributes)`` or ``(sv.Detections, extra attributes, {sample field: value})``
    (e.g. auto-labelling's caption); with ``prepare``, the batch's preprocessing
    (or its steps' futures, see :func:`~..core.engine.run_pipelined`) runs one batch
    ahead and ``label_batch`` gets it as a second argument. Every ``batch_size`` samples are
    written in one bulk write per field, so an interrupted run keeps every
    finished batch. Images are decoded ahead and labels encoded (mask crops,
    PNG files) in worker threads while the models work
    (:func:`~..core.engine.run_pipelined`). It yields :class:`Progress` after
    each write and returns the run's summary (see this module's docstring).
    """
    from ..core.engine import run_pipelined
    from ..core.masks import finish_masks
    from .labels import to_fiftyone_detections

    label_field, mask_dir, batch_size = settings["label_field"], settings["mask_dir"], settings["batch_size"]
    fail_abandoned_runs(ctx, ctx.operator_uri)
    total, done, objects, failed = len(rows), 0, 0, []
    yield Progress(0, total)

    def load(row):
        sample_id, filepath, payload = row
        return sample_id, load_image(filepath), payload

    def encode(row, loaded, result):
        """The sample's fo.Detections (mask crops; PNGs written when masks go to files), extra fields, count."""
        (sample_id, image, _), (detections, extra, *fields) = loaded, result
        detections = finish_masks(detections)  # deferred SAM 2 masks are made here, off the model's thread
        clear_mask_files(mask_dir, label_field, [sample_id])  # the labels that pointed at them are replaced
        paths = mask_paths_for(mask_dir, label_field, sample_id, len(detections))
        labels = to_fiftyone_detections(detections, image.shape[:2], source, mask_paths=paths, extra_attributes=extra)
        return labels, (fields[0] if fields else {}), len(detections)

    labels, errors, sample_fields, pending = {}, {}, {}, 0
    for outcome in run_pipelined(rows, load, label_batch, encode, batch_size=batch_size, prepare=prepare):
        sample_id, filepath, _ = outcome.item
        if outcome.error is not None:
            errors[sample_id] = outcome.error
            failed.append({"id": sample_id, "filepath": filepath, "error": outcome.error})
        else:
            labels[sample_id], fields, count = outcome.value
            for name, value in fields.items():
                sample_fields.setdefault(name, {})[sample_id] = value
            errors[sample_id] = None
            objects += count
        pending += 1
        if pending == batch_size:
            write_all(view, label_field, labels, errors, sample_fields, settings["write_mode"], source)
            labels, errors, sample_fields = {}, {}, {}
            done, pending = done + pending, 0
            yield Progress(done, total)
    if pending:
        write_all(view, label_field, labels, errors, sample_fields, settings["write_mode"], source)
        yield Progress(done + pending, total)
    return run_summary(total - len(failed), objects, failed, f"`{label_field}`")
