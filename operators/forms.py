"""The operators' forms: their inputs, and the problems a form shows before anything runs.

Every operator's ``resolve_input`` builds its form from these pieces (model,
detector, thresholds, outputs, background runs). A value the run would refuse
is shown under its own field (:func:`flag_problem`), and a dataset the operator
cannot label as a banner (:func:`add_form_error`), so Execute stays disabled
until the form is right; :func:`require_images` refuses the same dataset when
a run starts from Python. :func:`operator_config` says how the App offers to run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ..core import DEFAULT_BOX_THRESHOLD, DEFAULT_DETECTOR, DEFAULT_SEGMENTER, DEFAULT_TEXT_THRESHOLD, InputError
from ..core.detectors.florence2 import FLORENCE2_TASKS, PROMPTED_TASKS
from ..core.detectors.sliced import DEFAULT_SLICE_OVERLAP
from ..core.backends import SAM2_CHECKPOINTS, detector_choices, looks_like_local_path
from .dataset_writes import MASK_STORAGE, WRITE_MODES
from .params import check_batch_size, default_batch_size, detector_backend, param_problem
from .sharding import check_num_shards, delegation_available


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


# ---------------------------------------------------- model inputs


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


# --------------------------------------------------- output inputs


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


# -------------------------------------------------- dataset checks


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


def require_media(ctx, wanted: str) -> None:
    """Refuse a dataset of other media than ``wanted`` up front (a run started from Python), not sample by sample."""
    problem = media_problem(ctx.dataset, wanted)
    if problem:
        raise InputError(problem)


def require_images(ctx) -> None:
    require_media(ctx, "image")
