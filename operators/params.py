"""Operator parameters -> the core's :class:`~..core.spec.RunSpec`: one set of rules for a run's settings.

The operators' parameters are named as the spec's settings (``detector``,
``slice_size``, ``box_threshold``, ``step``...), so a bad one is reported in
the spec's words with the parameter's own name (``"slice_overlap 600: must be
at least 0 and smaller than the slice size (512)"``), both under its field in
the form (:func:`param_problem`) and when a run starts (:func:`spec_from_params`).
Only the operators' own spellings are translated here: ``slice_size`` 0 means
"whole images", the Florence-2 operators' ``checkpoint``, auto-labelling's
``caption_task``, and the cloud API token, which comes from FiftyOne's secret
``DDS_API_TOKEN`` (never a parameter: parameters are stored with delegated
runs and shown in the App; never in the spec's dict).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core.errors import InputError
from ..core.models import parse_detector_spec
from ..core.spec import DEFAULT_DETECTOR, RunSpec, SettingError

DDS_TOKEN_SECRET = "DDS_API_TOKEN"

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

    ``slice_size`` 0 means whole images (``None``), and the overlap is only read
    with a slice size, as the form only shows it then; Florence-2's ``task``
    is only read for Florence-2; the prompt is left out where it is empty
    (prompt-free detectors, SAM 3 given its phrases elsewhere).
    """
    settings = {name: params[name] for name in SPEC_PARAMS if name in params}
    if settings.get("slice_size") == 0:  # 0.0 too; not False (a bool is not a size)
        if not isinstance(settings["slice_size"], bool):
            settings["slice_size"] = None
    if settings.get("slice_size") is None:
        settings.pop("slice_overlap", None)
    elif isinstance(settings["slice_size"], (int, float)) and not isinstance(settings["slice_size"], bool):
        if settings["slice_size"] < 0:
            raise SettingError("slice_size", settings["slice_size"], "must be a whole number of at least 0 (0: whole images)")
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
