"""What the FiftyOne operators share: inputs, sharding, progress and bulk writes."""

from __future__ import annotations

import numbers
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from ..core import (
    DEFAULT_BOX_THRESHOLD,
    DEFAULT_DETECTOR,
    DEFAULT_SEGMENTER,
    DEFAULT_TEXT_THRESHOLD,
    GroundedSam2Error,
    InputError,
    load_image,
)
from ..core.detectors.florence2 import FLORENCE2_TASKS, PROMPTED_TASKS
from ..core.detectors.sliced import DEFAULT_SLICE_OVERLAP
from ..core.devices import resolve_device
from ..core.models import SAM2_CHECKPOINTS, detector_choices, looks_like_local_path
from ..core.pipeline import default_batch_size as core_default_batch_size
from .labels import merge_detections
from .params import DDS_TOKEN_SECRET, detector_backend, param_problem, spec_from_params  # noqa: F401 (re-exported)
from .runs import Progress, Work

WRITE_MODES = ("overwrite", "merge")
MASK_STORAGE = ("database", "files")


def error_field_name(label_field: str) -> str:
    """The sample field where a run records why a sample failed (``None`` when it succeeded)."""
    return f"{label_field}_error"


def error_field_description(label_field: str) -> str:
    """The error field's description, as every version since fc125eb wrote it (see :func:`created_by_us`)."""
    return f"Why {label_field!r} failed"


def field_info(role: str, label_field: str) -> dict[str, str]:
    """The ``info`` gsam2 stores on a field it creates beside a label field (``role``: errors, captions).

    FiftyOne keeps a field's ``info`` dict in the dataset's schema
    (``add_sample_field(..., info=)``, ``Field.info`` in fiftyone/core/fields.py),
    so a later run can tell its own field from a user's field of the same name.
    """
    return {"created_by": "gsam2", "role": role, "label_field": label_field}


def created_by_us(field, role: str, label_field: str) -> bool:
    """Whether ``field`` is the ``role`` field gsam2 created for ``label_field`` (so a run may clear it).

    Error fields created before fields were marked carry only their description.
    """
    if field_info(role, label_field).items() <= (field.info or {}).items():
        return True
    return role == "errors" and field.description == error_field_description(label_field)


# ----------------------------------------------------------------- inputs


def add_model_inputs(inputs: types.Object, detector: bool = True, ctx=None) -> None:
    if detector:
        add_detector_inputs(inputs, ctx)
    params = ctx.params if ctx is not None else {}
    add_checkpoint_input(
        inputs,
        params,
        "segmenter",
        default=DEFAULT_SEGMENTER,
        label="SAM 2 checkpoint",
        description="A hub id, a local folder, or a size: tiny, small, base-plus, large",
    )
    add_device_input(inputs)


def add_device_input(inputs: types.Object) -> None:
    inputs.str("device", default="auto", label="Device", description="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1...")


def checkpoint_problem(checkpoint: str | None) -> str | None:
    """Why ``checkpoint`` cannot name a model (a local path that does not exist), or ``None``.

    Checked in the form, before anything runs; hub ids are only checked when
    the model loads (the App server may be offline from the hub's point of view).
    """
    checkpoint = (checkpoint or "").strip()
    if not checkpoint or checkpoint in SAM2_CHECKPOINTS:
        return None
    checkpoint = checkpoint.partition(":")[2] if ":" in checkpoint and not checkpoint.startswith("/") else checkpoint
    if looks_like_local_path(checkpoint) and not Path(checkpoint).expanduser().exists():
        return f"{checkpoint!r}: no such file or folder on the App server's machine"
    if " " in checkpoint:
        return f"{checkpoint!r}: a hub id (owner/name) or a local path has no spaces"
    return None


def add_checkpoint_input(inputs: types.Object, params: dict[str, Any], name: str, **field) -> None:
    """A checkpoint field that shows a missing local path as the field's error, before the run."""
    prop = inputs.str(name, **field)
    problem = checkpoint_problem(params.get(name))
    if problem:
        prop.invalid = True
        prop.error_message = problem


def add_detector_inputs(inputs: types.Object, ctx=None) -> None:
    """The detector (any backend, or backend:checkpoint) and sliced inference."""
    choices = types.AutocompleteView()
    for name in detector_choices():
        choices.add_choice(name, label=name)
    params = ctx.params if ctx is not None else {}
    add_checkpoint_input(
        inputs,
        params,
        "detector",
        default=DEFAULT_DETECTOR,
        label="Detector",
        description=(
            "A backend (grounding-dino, florence2, owlv2, sam3, dinox, ...), backend:checkpoint, "
            "a Grounding DINO hub id or local folder, or an original Grounding DINO .pth file"
        ),
        view=choices,
    )
    if detector_backend(params) == "florence2":
        add_florence2_task_input(inputs)
    if detector_backend(params) == "dds-cloud":
        inputs.view(
            "token_notice",
            types.Notice(label="The cloud API token is read from the DDS_API_TOKEN secret / environment variable"),
        )
    add_slicing_inputs(inputs, params)


def add_slicing_inputs(inputs: types.Object, params: dict[str, Any]) -> None:
    size = inputs.int(
        "slice_size",
        default=0,
        label="Slice size (pixels)",
        description="Sliced inference (SAHI) for large images with small objects: detect over overlapping "
        "tiles of this size and merge. 0 = whole images",
    )
    flag_problem(size, lambda: param_problem(params, ["slice_size"]))
    if size.invalid or not params.get("slice_size"):
        return
    overlap = inputs.int(
        "slice_overlap",
        default=DEFAULT_SLICE_OVERLAP,
        label="Slice overlap (pixels)",
        description="At least the size of the objects you are after",
    )
    flag_problem(overlap, lambda: param_problem(params, ["slice_overlap"]))


def add_florence2_task_input(inputs: types.Object) -> None:
    inputs.enum(
        "task",
        list(FLORENCE2_TASKS),
        default="object_detection",
        required=True,
        label="Florence-2 task",
        description="object_detection, dense_region_caption and region_proposal need no prompt",
        view=types.DropdownView(),
    )


def needs_prompt(params: dict[str, Any]) -> bool:
    """Whether the run's detector takes a prompt (known from the parameters, before any model loads)."""
    if detector_backend(params) == "florence2":
        return (params.get("task") or "object_detection") in PROMPTED_TASKS
    return True


def add_threshold_inputs(inputs: types.Object, params: dict[str, Any] | None = None) -> None:
    # Number fields, not sliders: the App's SliderView cuts its label to "Box thresh..." and
    # draws the value over the description (seen in the App, fiftyone 1.22).
    params = params or {}
    for name, default, label, description in (
        ("box_threshold", DEFAULT_BOX_THRESHOLD, "Box threshold (0-1)", "Minimum detector score of a box"),
        ("text_threshold", DEFAULT_TEXT_THRESHOLD, "Text threshold (0-1)", "Minimum score of the phrase of a box"),
    ):
        prop = inputs.float(name, default=default, label=label, description=description)
        flag_problem(prop, lambda name=name: param_problem(params, [name]))


def flag_problem(prop: types.Property, check: Callable[[], Any]) -> None:
    """Show the one-line error ``check`` raises as the field's error in the form (Execute stays disabled)."""
    try:
        check()
    except InputError as error:
        prop.invalid = True
        prop.error_message = str(error)


def default_batch_size(params: dict[str, Any]) -> int:
    """The core's default for the run's device (:func:`~..core.pipeline.default_batch_size`: 4 on CUDA, else 1)."""
    try:
        device = resolve_device(params.get("device") or "auto")
    except GroundedSam2Error:  # an unknown device is reported by the run itself
        return 1
    return core_default_batch_size(device)


def add_output_inputs(inputs: types.Object, ctx, default_field: str) -> None:
    inputs.str(
        "label_field",
        default=default_field,
        required=True,
        label="Label field",
        description="Detections field to write (created if missing)",
    )
    inputs.enum(
        "write_mode",
        list(WRITE_MODES),
        default="overwrite",
        label="If the field has labels",
        description="overwrite: replace the field; merge: keep other labels, replace only this operator's",
        view=types.RadioGroup(),
    )
    inputs.enum(
        "mask_storage",
        list(MASK_STORAGE),
        default="database",
        label="Store masks",
        description="database: inside each label; files: PNGs under a folder (use for large datasets)",
        view=types.RadioGroup(),
    )
    if ctx.params.get("mask_storage") == "files":
        inputs.str("mask_dir", required=True, label="Mask folder", description="Absolute folder for the mask PNGs")
    batch = inputs.int(
        "batch_size",
        default=default_batch_size(ctx.params),
        label="Batch size",
        description="Images per forward pass and per database write (1 on a CPU, 4 on a GPU by default)",
    )
    flag_problem(batch, lambda: check_batch_size(ctx.params.get("batch_size"), ctx.params))
    add_sharding_input(inputs, ctx.params)


def add_sharding_input(inputs: types.Object, params: dict[str, Any]) -> None:
    prop = inputs.int(
        "num_shards",
        default=1,
        label="Background runs",
        description="1 = one run. N > 1 queues N background runs over disjoint slices of the samples, "
        "for N workers started with `fiftyone delegated launch`",
    )
    flag_problem(prop, lambda: check_num_shards(params))


def delegation_available() -> bool:
    """Whether open-source FiftyOne's App offers "Schedule".

    ``ExecutionOptions.orchestrator_registration_enabled`` is ``not
    fo.config.allow_legacy_orchestrators`` (fiftyone/operators/executor.py):
    without ``FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true`` where the App server
    runs, the App expects registered orchestrators, which only FiftyOne
    Enterprise has, and shows "Schedule - NOT AVAILABLE".
    """
    return bool(fo.config.allow_legacy_orchestrators)


def add_run_notice(inputs: types.Object) -> None:
    """Tell the user how this run will execute, and how to get background runs when they are off."""
    if delegation_available():
        inputs.view(
            "run_notice",
            types.Notice(
                label="Schedule runs this in the background: a worker started with "
                "`fiftyone delegated launch` picks it up. Execute runs it here, with progress."
            ),
        )
    else:
        inputs.view(
            "run_notice",
            types.Notice(
                label="Execute runs this here, with progress; keep the App open until it finishes. "
                "For background runs (Schedule), start the App server with "
                "FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true and a worker with `fiftyone delegated launch`."
            ),
        )


def operator_config(name: str, label: str, description: str) -> foo.OperatorConfig:
    """Long work: delegated by default where FiftyOne can delegate, immediate runs stream progress."""
    return foo.OperatorConfig(
        name=name,
        label=label,
        description=description,
        dynamic=True,
        execute_as_generator=True,  # immediate runs stream their progress (see runs.py)
        allow_immediate_execution=True,
        allow_delegated_execution=True,
        default_choice_to_delegated=delegation_available(),
    )


def check_field_name(name: str, example: str, frame_field: bool = False) -> str:
    """``name`` if it is a plain field name, by FiftyOne's rules and as a folder name under ``mask_dir``.

    FiftyOne refuses empty parts, a leading ``_`` and ``$``
    (``validate_field_name`` in fiftyone/core/odm/utils.py) but takes ``/``;
    a label field also names the folder of its mask files, so a path
    (``/tmp/elsewhere``, ``../x``, ``a\\b``) is refused too, and a dot (an
    embedded field's path) since the operators write top-level fields.
    """
    from fiftyone.core.odm.utils import validate_field_name

    if not name or "." in name:
        what = "frame field" if frame_field else "top-level field"
        raise InputError(f"label field {name!r}: give a {what} name such as {example!r}")
    if "/" in name or "\\" in name or "\0" in name:
        raise InputError(f"label field {name!r}: give a field name, not a path")
    try:
        validate_field_name(name, is_frame_field=frame_field)
    except ValueError as error:  # "Invalid field name: 'x'. Field names cannot ...": the name has no dot
        raise InputError(f"label field {name!r}: {str(error).split('. ', 1)[-1]}") from None
    return name


def run_settings(params: dict[str, Any]) -> dict[str, Any]:
    """Validate the output parameters shared by the operators, before anything is written."""
    label_field = check_field_name((params.get("label_field") or "").strip(), "gsam2")
    mode = params.get("write_mode", "overwrite")
    if mode not in WRITE_MODES:
        raise InputError(f"write mode {mode!r}: choose one of {', '.join(WRITE_MODES)}")
    storage = params.get("mask_storage", "database")
    if storage not in MASK_STORAGE:
        raise InputError(f"mask storage {storage!r}: choose one of {', '.join(MASK_STORAGE)}")
    mask_dir = None
    if storage == "files":
        if not params.get("mask_dir"):
            raise InputError("mask folder: required when masks are stored as files")
        mask_dir = Path(params["mask_dir"]).expanduser().resolve()
    spec = spec_from_params(params)  # the run's settings, by the core's rules (thresholds, slicing, batch size...)
    check_num_shards(params)
    return {
        "label_field": label_field,
        "write_mode": mode,
        "mask_dir": mask_dir,
        "batch_size": spec.batch_size or default_batch_size(params),  # also samples per database write
        "box_threshold": spec.box_threshold,
        "text_threshold": spec.text_threshold,
    }


def check_batch_size(batch_size: Any, params: dict[str, Any]) -> int:
    """The batch size (unset: :func:`default_batch_size`), a whole number of at least 1 (the spec's rule)."""
    return spec_from_params({"batch_size": batch_size}).batch_size or default_batch_size(params)


def check_num_shards(params: dict[str, Any]) -> int:
    """How many background runs (``num_shards``, unset: 1): a whole number, never a rounded 2.5."""
    return whole_number("background runs (num_shards)", params.get("num_shards"), minimum=1, default=1)


def whole_number(name: str, value: Any, minimum: int, default: int) -> int:
    """``value`` (unset: ``default``) if a whole number of at least ``minimum``; 2.5, NaN, inf and True are not."""
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} {value!r}: must be a whole number of at least {minimum}")
    return int(value)


def media_problem(dataset, wanted: str) -> str | None:
    """Why this operator cannot run on ``dataset`` (it holds other media than ``wanted``), or ``None``."""
    media_type = getattr(dataset, "media_type", None) or wanted
    if media_type == wanted:
        return None
    hints = {"image": " (use track_video for videos)", "video": " (use ground_and_segment for images)"}
    hint = hints[wanted] if {media_type, wanted} == {"image", "video"} else ""
    return f"dataset {dataset.name!r} holds {media_type}s: this operator labels {wanted}s{hint}"


def require_media_in_form(inputs: types.Object, ctx, wanted: str) -> bool:
    """Show a dataset of the wrong media type as the form's error (Execute stays disabled); ``True`` if fine."""
    problem = media_problem(ctx.dataset, wanted)
    if problem:
        add_form_error(inputs, "media_error", problem)
    return problem is None


def add_form_error(inputs: types.Object, name: str, problem: str) -> None:
    """A one-line error banner in the form that keeps Execute disabled."""
    error = inputs.view(name, types.Error(label=problem))
    error.invalid = True
    error.error_message = problem


def require_images_in_form(inputs: types.Object, ctx) -> bool:
    return require_media_in_form(inputs, ctx, "image")


def require_images(ctx) -> None:
    """Refuse a dataset of videos (or point clouds...) up front, not sample by sample."""
    problem = media_problem(ctx.dataset, "image")
    if problem:
        raise InputError(problem)


# ---------------------------------------------------------------- sharding


def shard_of(view, params: dict[str, Any]):
    """This run's slice of ``view`` (all of it when not sharded).

    A shard is a range of sample ids fixed when the shards were queued
    (``shard_range``), not a slice recomputed by each worker: a view that
    depends on the output field ("label what has none yet") shrinks as other
    shards write, and a recomputed slice would skip samples. A sample stays in
    its range whatever the others do, so every sample is processed exactly once.
    """
    bounds = params.get("shard_range")
    if bounds is None:
        return view
    low, high = bounds
    ids = [i for i in sorted(view.values("id")) if (low is None or i >= low) and (high is None or i < high)]
    return view.select(ids, ordered=True)


def shard_ranges(view, num_shards: int) -> list[list[str | None]]:
    """``num_shards`` contiguous ``[low, high)`` ranges of the view's sorted sample ids (``None``: open end)."""
    ids = sorted(view.values("id"))
    if not ids:  # nothing to split: the first shard takes the (empty) view, the others an empty range
        return [[None, None]] + [["", ""] for _ in range(num_shards - 1)]
    cuts = [None] + [ids[len(ids) * k // num_shards] for k in range(1, num_shards)] + [None]
    return [[cuts[k], cuts[k + 1]] for k in range(num_shards)]


def wants_fan_out(params: dict[str, Any]) -> bool:
    """Whether this request asks for background runs over shards (queued at once, not delegated).

    Any ``num_shards`` but 1 counts, read without converting it: an invalid
    one (2.5, NaN, 0) then runs at once, where :func:`run_settings` refuses it
    in one line, instead of being rounded or raising here.
    """
    return params.get("shard_range") is None and params.get("num_shards") not in (None, 1)


def queue_shards(ctx, operator_uri: str) -> list[str]:
    """Queue one delegated run per shard of this request, each with its id range fixed now; return their ids."""
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext

    num_shards = int(ctx.params["num_shards"])
    service = DelegatedOperationService()
    queued = []
    for shard_index, bounds in enumerate(shard_ranges(ctx.target_view(), num_shards)):
        request = dict(ctx.request_params)
        request["params"] = dict(ctx.params, shard_range=bounds)
        request["delegated"] = True
        shard_ctx = ExecutionContext(request_params=request, operator_uri=operator_uri)
        operation = service.queue_operation(
            operator=operator_uri,
            context=shard_ctx.serialize(),
            delegation_target=ctx.request_params.get("delegation_target"),
            label=f"{operator_uri.split('/')[-1]} shard {shard_index + 1}/{num_shards}",
        )
        queued.append(str(operation.id))
    return queued


# ---------------------------------------------------------------- abandoned runs

# A running operation with no sign of life (progress, or the monitor's ping) for this long
# lost its worker (kill -9, a lost machine): it will never finish.
ABANDONED_AFTER = timedelta(minutes=30)


def fail_abandoned_runs(ctx, operator_uri: str, now: datetime | None = None) -> list[str]:
    """Mark this operator's delegated runs on this dataset that lost their worker as failed; return their ids.

    FiftyOne leaves such a run "running" forever. Its last sign of life is the
    latest of ``started_at``, ``updated_at`` (the monitor's ping) and
    ``status.updated_at`` (our progress, reported every batch or video).
    """
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionResult, ExecutionRunState

    now = now or datetime.utcnow()
    own = str(getattr(ctx, "_delegated_operation_id", None) or "")
    service = DelegatedOperationService()
    failed = []
    for operation in service.get_running_operations(operator=operator_uri, dataset_name=ctx.dataset.name):
        if str(operation.id) == own:
            continue
        status_time = getattr(operation.status, "updated_at", None) if operation.status is not None else None
        seen = [t for t in (operation.started_at, operation.updated_at, status_time) if t is not None]
        if seen and now - max(seen) > ABANDONED_AFTER:
            minutes = int((now - max(seen)).total_seconds() // 60)
            message = f"the worker stopped without finishing: no progress for {minutes} minutes (marked failed by a later run)"
            service.set_failed(
                operation.id, result=ExecutionResult(error=message), required_state=ExecutionRunState.RUNNING
            )
            failed.append(str(operation.id))
    return failed


# ---------------------------------------------------------------- writing


def check_outputs(dataset: fo.Dataset, settings: dict[str, Any], companions: dict[str, str] | None = None) -> None:
    """Refuse, before anything is written, a run that would overwrite a field or file that is not its own.

    ``companions`` are the text fields the run writes beside the label field,
    as ``{name: role}`` (the error field is always one). The mask folder is
    created and tried (:func:`check_mask_dir`).
    """
    label_field = settings["label_field"]
    field = dataset.get_field_schema().get(label_field)
    if field is not None and getattr(field, "document_type", None) is not fo.Detections:
        raise InputError(
            f"label field {label_field!r} already exists and does not hold Detections; choose another name"
        )
    check_error_field(dataset, label_field)
    for name, role in (companions or {}).items():
        check_companion_field(dataset, name, role, label_field)
    if settings["mask_dir"] is not None:
        check_mask_dir(settings["mask_dir"], label_field)


def ensure_fields(dataset: fo.Dataset, label_field: str) -> None:
    """Create the label field; the error field is created by the first failure (:func:`write_errors`).

    Call after :func:`check_outputs`: a run where nothing failed adds nothing to the App's sidebar.
    """
    if label_field not in dataset.get_field_schema():
        dataset.add_sample_field(label_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)


def check_error_field(dataset: fo.Dataset, label_field: str) -> None:
    """Refuse a run whose error field exists and is not the one gsam2 created for ``label_field``."""
    check_companion_field(dataset, error_field_name(label_field), "errors", label_field)


def check_companion_field(dataset: fo.Dataset, name: str, role: str, label_field: str) -> None:
    """Refuse a run that would write ``role`` (errors, captions) into a field ``name`` gsam2 did not create.

    A run sets these fields for every sample it processes (``None`` for a
    success in the error field), so a user's own field of that name (their
    notes in ``review_error``) would be lost: only a field marked by
    :func:`field_info` for this label field is written (:func:`created_by_us`).
    """
    field = dataset.get_field_schema().get(name)
    if field is None:
        return
    if not isinstance(field, fo.StringField):
        raise InputError(
            f"field {name!r} already exists and does not hold text; "
            f"it is where {role} of {label_field!r} are recorded: choose another label field"
        )
    if not created_by_us(field, role, label_field):
        raise InputError(
            f"field {name!r} already exists and gsam2 did not create it; "
            f"it is where {role} of {label_field!r} are recorded: choose another label field"
        )


def check_mask_dir(mask_dir: Path, label_field: str) -> None:
    """Create the label field's mask folder and write a file in it, or refuse the run in one line.

    A file in the way, a read-only file system or a missing permission would
    otherwise be an ``OSError`` at the first sample. Only a real write tells:
    ``os.access`` answers yes to root on a read-only mount such as ``/sys``.
    """
    folder = mask_folder(mask_dir, label_field)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise InputError(f"mask folder {str(mask_dir)!r}: cannot write {str(folder)!r}: {reason}") from None


def mask_folder(mask_dir: Path, label_field: str, sample_id: str = "") -> Path:
    """The folder of a label field's (or one of its samples') mask PNGs, refused unless it lies under ``mask_dir``."""
    folder = (mask_dir / label_field / sample_id).resolve()
    if not folder.is_relative_to(mask_dir.resolve()):
        raise InputError(f"label field {label_field!r}: its mask files would be written outside {str(mask_dir)!r}")
    return folder


def write_batch(
    view,
    label_field: str,
    labels: dict[str, fo.Detections],
    errors: dict[str, str | None],
    write_mode: str,
    source: str,
) -> None:
    """One bulk write of a batch's labels and error records, keyed by sample id."""
    if labels:
        if write_mode == "merge":
            batch = view.select(list(labels))
            existing = dict(zip(*batch.values(["id", label_field])))
            labels = {
                sample_id: merge_detections(existing.get(sample_id), new, source) for sample_id, new in labels.items()
            }
        view.set_values(label_field, labels, key_field="id")
    write_errors(view, label_field, errors)


def write_errors(view, label_field: str, errors: dict[str, str | None]) -> None:
    """Record failures (text) and clear earlier failures of samples that now succeeded (``None``).

    The error field is created by the first failure; while it does not exist
    there is nothing to clear, so successes write nothing.
    """
    error_field = error_field_name(label_field)
    dataset = view._root_dataset
    exists = error_field in dataset.get_field_schema()
    if not exists:
        errors = {sample_id: error for sample_id, error in errors.items() if error is not None}
        if errors:
            dataset.add_sample_field(
                error_field,
                fo.StringField,
                description=error_field_description(label_field),
                info=field_info("errors", label_field),  # what check_error_field recognises as ours
            )
    if errors:
        view.set_values(error_field, errors, key_field="id")


def clear_mask_files(mask_dir: Path | None, label_field: str, sample_ids: Iterable[str]) -> None:
    """Remove the PNGs a previous run wrote for these samples (their labels are being replaced)."""
    if mask_dir is None:
        return
    for sample_id in sample_ids:
        shutil.rmtree(mask_folder(mask_dir, label_field, sample_id), ignore_errors=True)


def mask_paths_for(mask_dir: Path | None, label_field: str, sample_id: str, count: int) -> list[Path] | None:
    if mask_dir is None:
        return None
    folder = mask_folder(mask_dir, label_field, sample_id)
    return [folder / f"{index:04d}.png" for index in range(count)]


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
    each write and returns the run's summary (see :mod:`.runs`).
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


def write_all(view, label_field, labels, errors, sample_fields, write_mode: str, source: str) -> None:
    """One bulk write per field: the labels, the error records, and extra sample fields (captions)."""
    write_batch(view, label_field, labels, errors, write_mode, source)
    for name, values in sample_fields.items():
        view.set_values(name, values, key_field="id")


# ---------------------------------------------------------------- results

#: How many failures a summary lists by name (all of them are in the error field).
FAILURES_LISTED = 100


def run_summary(
    processed: int, objects: int, failed: list[dict[str, str]], written_to: str, what: str = "samples", notes: str = ""
) -> dict[str, Any]:
    """A run's result: counts and failures for Python, and the same as markdown for the App's result dialog."""
    noun = what if processed != 1 else what.rstrip("s")
    lines = [f"**{processed}** {noun} labelled, **{objects}** objects written to {written_to}."]
    if notes:
        lines.append(notes)
    if failed:
        error_field = written_to.strip("`").removeprefix("frames.")
        lines.append(
            f"**{len(failed)} failed** (each failure is also in the sample field `{error_field_name(error_field)}`):"
        )
        lines.append("| File | Error |\n|---|---|")
        lines[-1] += "".join(
            f"\n| {_cell(row['filepath'])} | {_cell(row['error'])} |" for row in failed[:FAILURES_LISTED]
        )
        if len(failed) > FAILURES_LISTED:
            lines.append(f"... and {len(failed) - FAILURES_LISTED} more.")
    return {
        "processed": processed,
        "objects": objects,
        "failed_count": len(failed),
        "failed": failed[:FAILURES_LISTED],
        "summary": "\n\n".join(lines),
    }


def _cell(text: str) -> str:
    """Text that cannot break a markdown table row."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def queued_summary(operation_ids: list[str]) -> dict[str, Any]:
    """The result of a run split into background runs: what was queued and what must run them."""
    worker = (
        "Start a worker where the data is: `fiftyone delegated launch` (one per run to run them in parallel); "
        "follow them with `fiftyone delegated list`."
    )
    text = f"**Queued {len(operation_ids)} background runs.** Nothing runs until a worker picks them up. {worker}"
    text += "\n\n" + "\n".join(f"- `{operation_id}`" for operation_id in operation_ids)
    return {"queued": operation_ids, "summary": text}


def summary_outputs(title: str) -> types.Property:
    """The result dialog: one markdown block with counts, failures by file, or what to do next."""
    outputs = types.Object()
    outputs.str("summary", view=types.MarkdownView())
    return types.Property(outputs, view=types.View(label=title))
