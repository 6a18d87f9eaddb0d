"""``gsam2 image`` and ``gsam2 autolabel``: label image files in bulk through the engine."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

from ..core import GroundedSam2Error, InputError
from ..core.errors import DiskFullError, OutputError
from ..core.outputs import prepare_output_folder
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
    already_done: int = 0  # --resume: inputs whose complete results were kept

    def lines(self) -> list[str]:
        rate = self.images / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"images processed: {self.images}",
            f"objects found:    {self.objects}",
            f"failures:         {len(self.failures)}",
            f"time:             {self.seconds:.1f} s ({rate:.2f} images/s)",
        ]
        if self.already_done:
            lines.insert(0, f"already done:     {self.already_done} (--resume: complete results kept)")
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
    if args.ray is not None:
        return run_on_ray(args, "images")
    try:
        check_local_options(args)
        plan = plan_image_run(args)
        run = Run(spec_from_args(args))
        run.load_for_images(check_prompt=True)
    except GroundedSam2Error as error:
        return usage_error(error)
    return label_image_files(
        args,
        plan,
        lambda summary, progress, dataset: label_batches(args, plan, run, "images", summary, progress, dataset),
        phrases=run.phrases(),
    )


def run_autolabel(args: argparse.Namespace) -> int:
    if args.ray is not None:
        return run_on_ray(args, "autolabel")
    try:
        check_local_options(args)
        plan = plan_image_run(args)
        run = Run(spec_from_args(args)).load_for_images()
    except GroundedSam2Error as error:
        return usage_error(error)
    return label_image_files(
        args,
        plan,
        lambda summary, progress, dataset: label_batches(args, plan, run, "autolabel", summary, progress, dataset),
    )


def check_local_options(args: argparse.Namespace) -> None:
    """``--workers`` and ``--gpus-per-worker`` size a Ray pool: without ``--ray`` they are a usage error."""
    for option in ("workers", "gpus_per_worker"):
        if getattr(args, option, None) is not None:
            raise InputError(f"--{option.replace('_', '-')}: only with --ray (it sizes the Ray cluster's worker pool)")


def run_on_ray(args: argparse.Namespace, work: str) -> int:
    """``gsam2 image|autolabel --ray``: the same plan and files, the labelling spread over a Ray cluster."""
    try:
        from ..cluster.workers import check_pool_options, connect, pool_size, require_ray

        check_pool_options(args.workers, args.gpus_per_worker)
        require_ray()
        plan = plan_image_run(args)
        spec = spec_from_args(args)
        # The classes of COCO / YOLO files, as a local run's detector gives them (autolabel's come from captions).
        phrases = prompt_phrases(spec) if work == "images" else []
        connect(args.ray or None)
        workers, gpus = pool_size(args.workers, args.gpus_per_worker)
    except GroundedSam2Error as error:
        return usage_error(error)
    return label_image_files(
        args,
        plan,
        lambda summary, progress, dataset: label_on_ray(
            args, plan, spec, work, workers, gpus, summary, progress, dataset
        ),
        phrases=phrases,
    )


def prompt_phrases(spec) -> list[str]:
    """Without loading a model, the phrases the detector gets (:func:`~..core.detectors.base.detector_phrases`).

    None for Florence-2 on a prompt-free task; otherwise the prompt's, and a missing prompt is a usage
    error. (A local run asks the loaded detector; a Ray driver loads no model, and the workers check the
    rest when they load theirs.)
    """
    from ..core.detectors.florence2 import PROMPTED_TASKS
    from ..core.prompts import parse_prompt

    if spec.detector.split(":", 1)[0] == "florence2" and (spec.task or "object_detection") not in PROMPTED_TASKS:
        return []
    if not spec.prompt:
        raise InputError("--prompt: missing: name what to find, e.g. --prompt \"car. person.\"")
    return parse_prompt(spec.prompt)


def label_on_ray(
    args, plan: ImageRunPlan, spec, work: str, workers: int, gpus: float, summary, progress, dataset=None
) -> None:
    """Run :func:`~..cluster.images.label_files_on_ray` and count its results as :func:`label_batches` does.

    Results land in the order workers finish; the dataset files (COCO, YOLO) are fed in input order, as a
    local run feeds them (ids and classes the same on every run): a result waits until those before it
    have landed.
    """
    import os
    import pickle

    from tqdm import tqdm

    from ..cluster.images import label_files_on_ray
    from ..cluster.workers import CRASH_ONCE_ENV

    failures: list[tuple[int, str]] = []
    several: list[int] = []
    landed: dict[int, object] = {}  # index -> its result, until those before it have landed
    next_index = 0
    collect = dataset is not None and dataset.active

    def count_in_input_order() -> None:
        nonlocal next_index
        while next_index in landed:
            result = landed.pop(next_index)
            if result.error is None:
                try:
                    if collect:
                        record, polygons = pickle.loads(result.dataset_row)
                        dataset.add(plan.files[result.index], plan.names[result.index], record, polygons)
                    summary.images += 1
                    summary.objects += result.objects
                except OutputError as error:  # that image's label file or link (a full disk stops the run)
                    failures.append((result.index, f"{plan.files[result.index]}: {error}"))
                    tqdm.write(printable(f"error: {failures[-1][1]}", sys.stderr), file=sys.stderr)
            next_index += 1

    results = label_files_on_ray(
        plan.files,
        plan.names,
        range(len(plan.files)),
        spec.to_dict(),
        work,
        plan.output,
        draw=not args.no_draw,
        workers=workers,
        gpus_per_worker=gpus,
        crash_marker=os.environ.get(CRASH_ONCE_ENV),
        formats=plan.formats,
    )
    try:
        for result in results:
            if result.error is not None:
                failures.append((result.index, result.error))
                tqdm.write(printable(f"error: {result.error}", sys.stderr), file=sys.stderr)
            elif result.several_frames:
                several.append(result.index)
            landed[result.index] = result
            count_in_input_order()
            progress.update(1)
    except (KeyboardInterrupt, DiskFullError):
        raise
    except Exception as error:  # noqa: BLE001 - the pipeline itself failed (e.g. workers that cannot load the models)
        reason = root_cause(error)
        left = len(plan.files) - next_index
        tqdm.write(printable(f"error: the Ray run failed: {reason}", sys.stderr), file=sys.stderr)
        summary.stopped = f"the Ray run failed ({reason}); {left} images not processed"
    finally:
        # In input order, as a local run lists them (results land in the order workers finish).
        summary.failures += [message for _, message in sorted(failures)]
        summary.first_frame_only += [str(plan.files[index]) for index in sorted(several)]


def root_cause(error: BaseException) -> str:
    """The first line of the innermost error a Ray failure wraps (a worker's ``ModelLoadError``, say)."""
    while error.__cause__ is not None or getattr(error, "cause", None) is not None:
        error = error.__cause__ or error.cause
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


def label_image_files(args: argparse.Namespace, plan: ImageRunPlan, process, phrases=()) -> int:
    """The bulk loop of ``gsam2 image`` and ``gsam2 autolabel``: load, label, write labels (+ drawing), summarise.

    ``process(summary, progress, dataset)`` labels ``plan``'s files and counts them: :func:`label_batches`
    in this process, :func:`label_on_ray` on a Ray cluster. A file that cannot be read, or a batch that
    fails, is reported and the run goes on. Every file is written under a temporary name and renamed, so
    none is ever left half-written; the dataset files (``--format coco|yolo``) are assembled at the end,
    also when the run is interrupted, from the images finished. ``phrases``: the prompt's, the first
    classes of those files, in prompt order.
    """
    from tqdm import tqdm

    from ..core.formats import ImageDatasetWriter

    files, output = plan.files, plan.output
    for failure in plan.input_errors:
        report(f"error: {failure}", sys.stderr)
    summary = RunSummary(failures=list(plan.input_errors), already_done=plan.already_done)
    if not files and not plan.already_done:
        print("error: no input images found", file=sys.stderr)
        return EXIT_FAILURES
    prepare_output_folder(output, "--output")
    dataset = ImageDatasetWriter(output, plan.formats, phrases)

    started = time.perf_counter()
    progress = tqdm(total=len(files), desc="images", unit="img", disable=args.quiet)
    try:
        process(summary, progress, dataset)
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
    return EXIT_FAILURES if summary.failures or summary.stopped else EXIT_OK


def close_dataset(dataset, summary: RunSummary) -> None:
    """Assemble the dataset files (COCO, YOLO's data.yaml) from the images done; a failure is the summary's."""
    try:
        dataset.close()
    except (GroundedSam2Error, DiskFullError) as error:  # e.g. a full disk while the COCO file is assembled
        summary.failures.append(str(error))
        report(f"error: {error}", sys.stderr)


def label_batches(
    args, plan: ImageRunPlan, run: Run, work: str, summary: RunSummary, progress, dataset=None
) -> None:
    """Label ``plan``'s files in this process (:func:`~..core.image_files.label_files`) and count them."""
    from ..core.engine import long_lived_objects_frozen, reuse_freed_buffers
    from ..core.image_files import label_files

    reuse_freed_buffers()  # no page faults on every batch's large buffers (a bulk process keeps its peak)
    files = list(zip(plan.files, plan.names))
    with long_lived_objects_frozen():  # the models are loaded: the collector need not walk them on every pass
        for outcome in label_files(run, work, files, plan.output, draw=not args.no_draw, formats=plan.formats):
            count_outcome(outcome, summary, progress, dataset)


def count_outcome(outcome, summary: RunSummary, progress, dataset=None) -> None:
    """One image's outcome in the summary (and, in input order, in the dataset files)."""
    from tqdm import tqdm

    from ..core.image_files import failure_line

    path = outcome.item[0]
    if outcome.error is not None:  # that image's failure; the others of its batch still count
        message = failure_line(outcome)
        summary.failures.append(message)
        tqdm.write(printable(f"error: {message}", sys.stderr), file=sys.stderr)
    else:
        written = outcome.value
        if dataset is not None:  # in input order: ids and classes are the same on every run
            try:
                dataset.add(path, outcome.item[1], written.record, written.polygons)
            except OutputError as error:  # that image's label file or link (a full disk stops the run)
                summary.failures.append(f"{path}: {error}")
                tqdm.write(printable(f"error: {summary.failures[-1]}", sys.stderr), file=sys.stderr)
                progress.update(1)
                return
        summary.images += 1
        summary.objects += written.objects
        if written.several_frames:
            summary.first_frame_only.append(str(path))
    progress.update(1)
