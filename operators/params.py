"""Operator parameters -> the core's :class:`~..core.spec.RunSpec`: one set of rules for a run's settings.

The operators' parameters are named as the spec's settings (``detector``,
``slice_size``, ``box_threshold``, ``step``...), so a bad one is reported in
the spec's words with the parameter's own name (``"slice_overlap 600: must be
at least 0 and smaller than the slice size (512)"``), both under its field in
the form (:func:`param_problem`) and when a run starts (:func:`spec_from_params`).
Only the operators' own spellings are translated here: the Florence-2
operators' ``checkpoint``, auto-labelling's ``caption_task``, and the cloud API
token, which comes from FiftyOne's secret ``DDS_API_TOKEN`` (never a parameter:
parameters are stored with delegated runs and shown in the App; never in the
spec's dict). ``slice_size`` 0 ("whole images") is the spec's own spelling
(:meth:`RunSpec.build <..core.spec.RunSpec.build>` drops it and the overlap).

The output parameters that are not run settings (``label_field``,
``write_mode``, ``mask_storage``, ``mask_dir``, ``num_shards``) are checked by
:func:`run_settings`, before anything is written.
"""

from __future__ import annotations


from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..core.devices import resolve_device
from ..core.errors import GroundedSam2Error, InputError
from ..core.backends import parse_detector_spec
from ..core.pipeline import default_batch_size as core_default_batch_size
from ..core.spec import DEFAULT_DETECTOR, RunSpec, SettingError
from .dataset_writes import MASK_STORAGE, WRITE_MODES
from .sharding import check_num_shards

DDS_TOKEN_SECRET = "DDS_API_TOKEN"
#: A bad ``slice_size`` as the form says it, where 0 means whole images.
SLICE_SIZE_PROBLEM = "must be a whole number of at least 0 (0: whole images)"

#: Operator parameters that are the spec's settings under the same name.
SPEC_PARAMS = (
    "prompt",
    "detector",
    "task",
    "slice_size",
    "slice_overlap",
    "segmenter",
    "tracker",
    "device",
    "box_threshold",
    "text_threshold",
    "batch_size",
    "step",
    "iou_threshold",
    "prompt_type",
    "reverse",
    "end_after",
    "caption_task",
)


def param_name(setting: str) -> str:
    """How the operators name a setting: the parameter's own name (``slice_overlap``)."""
    return setting


def detector_backend(params: dict[str, Any]) -> str:
    """The detector's backend (``grounding-dino``, ``florence2``, ``dds-cloud``...), read from the parameters."""
    return parse_detector_spec(params.get("detector") or DEFAULT_DETECTOR)[0]


def spec_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The spec's settings in ``params``, in the spec's meaning (``RunSpec.build``'s keyword arguments).

    ``RunSpec.build`` reads the rest as the form means it: ``slice_size`` 0 is
    whole images, and the overlap is dropped without a size (the form hides it
    then). Left out here: Florence-2's ``task`` for another detector (the form
    does not show it, so it may hold a stale value) and an empty prompt
    (prompt-free detectors, SAM 3 given its phrases elsewhere).
    """
    settings = {name: params[name] for name in SPEC_PARAMS if name in params}
    if "task" in settings and detector_backend(params) != "florence2":
        settings.pop("task")
    if isinstance(settings.get("prompt"), str) and not settings["prompt"].strip():
        settings.pop("prompt")
    return settings


def spec_from_params(params: dict[str, Any], ctx=None) -> RunSpec:
    """The checked :class:`RunSpec` the operator parameters describe; the API token from ``ctx.secret``.

    Raises:
        InputError: one line naming the parameter (``"step 0: must be at least 1"``).
    """
    try:
        spec = RunSpec.build(**spec_settings(params))
    except SettingError as error:
        if error.setting == "slice_size":  # the spec's "at least 1", in the form's words: 0 is a choice there
            error = SettingError("slice_size", error.value, SLICE_SIZE_PROBLEM)
        raise InputError(error.spelled(param_name)) from None
    if ctx is not None and detector_backend(params) == "dds-cloud":
        token = ctx.secret(DDS_TOKEN_SECRET)
        if token:
            spec = spec.replace(api_token=token)
    return spec


def param_problem(params: dict[str, Any], names: Iterable[str]) -> None:
    """Raise the one-line error of the first of these parameters that the spec refuses (for the form).

    Only ``names`` are checked (with ``slice_size`` beside ``slice_overlap``, which needs it),
    so that each field shows its own mistake.
    """
    names = set(names)
    if "slice_overlap" in names:
        names.add("slice_size")
    spec_from_params({name: params[name] for name in names if name in params})


# ---------------------------------------------------------------- output parameters


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
    }


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


def check_batch_size(batch_size: Any, params: dict[str, Any]) -> int:
    """The batch size (unset: :func:`default_batch_size`), a whole number of at least 1 (the spec's rule)."""
    return spec_from_params({"batch_size": batch_size}).batch_size or default_batch_size(params)


def default_batch_size(params: dict[str, Any]) -> int:
    """The core's default for the run's device (:func:`~..core.pipeline.default_batch_size`: 4 on CUDA, else 1)."""
    try:
        device = resolve_device(params.get("device") or "auto")
    except GroundedSam2Error:  # an unknown device is reported by the run itself
        return 1
    return core_default_batch_size(device)
