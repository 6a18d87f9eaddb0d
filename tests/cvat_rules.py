"""The rules CVAT applies to what a serverless function answers, written from CVAT's own code.

Sources (CVAT 2.73.0, ../shared/cvat-server/src; the same logic in 2.40-2.42):
- cvat/apps/lambda_manager/views.py: ``LambdaFunction.invoke`` (label mapping with
  ``labels_compatible``, the tracker's shape forms and state signing),
  ``DetectionResultConverter._parse_anno`` (what becomes of a detector item);
- cvat/apps/engine/serializers.py: ``ShapeSerializer.validate`` (points per shape type);
- cvat/apps/lambda_manager/utils.py: ``ROIHelper.translate_interactor_response``;
- cvat-ui tools-control.tsx: the tracker answer's ``shape.points`` read for every object.

Each check raises ``CvatRejects`` where CVAT would fail the request (or the UI break).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


class CvatRejects(AssertionError):
    """What CVAT would refuse (or fail on)."""


def check_points(shape_type: str, points: list[float]) -> None:
    """``ShapeSerializer.validate``: the number of coordinates each shape type needs."""
    count = len(points)
    valid = {
        "rectangle": count == 4,
        "polygon": count >= 6 and count % 2 == 0,
        "mask": count >= 5,
    }.get(shape_type)
    if valid is None:
        raise CvatRejects(f"unexpected shape type {shape_type!r}")
    if not valid:
        raise CvatRejects(f"points: invalid length {count} for shape type {shape_type!r}")


def labels_compatible(model_type: str, task_type: str) -> bool:
    """views.py ``labels_compatible``: equal types, ``any`` on either side, or mask with polygon."""
    return (
        model_type == task_type
        or (task_type == "any" and model_type != "skeleton")
        or (model_type == "any" and task_type != "skeleton")
        or {model_type, task_type} <= {"mask", "polygon"}
    )


def stored_detector_shapes(
    items: list[dict[str, Any]], spec: list[dict[str, Any]], task_labels: dict[str, str], conv_mask_to_poly: bool
) -> list[dict[str, Any]]:
    """What CVAT stores of a detector's answer for a task with ``{label name: type}`` labels.

    Items whose label has no compatible task label of the same name are dropped
    (the default mapping); each kept item becomes a shape as ``_parse_anno``
    builds it and must pass ``ShapeSerializer.validate``, or the whole frame fails.
    """
    spec_types = {label["name"]: label.get("type", "any") for label in spec}
    stored = []
    for item in items:
        name = item["label"]
        if name not in spec_types:
            continue
        if name not in task_labels or not labels_compatible(spec_types[name], task_labels[name]):
            continue
        shape_type = item["type"]
        points = item.get("mask", []) if shape_type == "mask" else item.get("points", [])
        if shape_type == "mask" and "points" in item and conv_mask_to_poly:
            shape_type, points = "polygon", item["points"]
        check_points(shape_type, points)
        if shape_type != spec_types[name] and not labels_compatible(shape_type, spec_types[name]):
            raise CvatRejects(f"{name!r} is declared {spec_types[name]!r} but answered as {shape_type!r}")
        stored.append({"label": name, "type": shape_type, "points": points})
    return stored


def decode_detector_mask(points: list[int], height: int, width: int) -> np.ndarray:
    """A detector ``mask``: the box crop row-major (0/1), then the inclusive ``[xtl, ytl, xbr, ybr]``."""
    *values, xtl, ytl, xbr, ybr = points
    mask = np.zeros((height, width), bool)
    mask[ytl : ybr + 1, xtl : xbr + 1] = np.array(values, bool).reshape(ybr - ytl + 1, xbr - xtl + 1)
    return mask


def interactor_mask(response: dict[str, Any], height: int, width: int) -> np.ndarray:
    """The interactor's mask as the UI reads it (rows of 0/255 with optional ``bounds``), full frame."""
    if set(response) - {"mask", "bounds", "points"}:
        raise CvatRejects(f"unexpected interactor answer fields {sorted(response)}")
    rows = np.array(response["mask"])
    if rows.ndim != 2 or not rows.size:
        raise CvatRejects("the interactor's 'mask' must be a non-empty list of equal rows")
    if not set(np.unique(rows)) <= {0, 255}:
        raise CvatRejects("the interactor's 'mask' holds values other than 0 and 255")
    x1, y1 = (response["bounds"][:2]) if "bounds" in response else (0, 0)
    mask = np.zeros((height, width), bool)
    mask[y1 : y1 + rows.shape[0], x1 : x1 + rows.shape[1]] = rows > 0
    return mask


def translate_interactor_response(response: dict[str, Any], roi: list[int], height: int, width: int) -> dict:
    """``ROIHelper.translate_interactor_response``: the answer for a crop pasted into the full frame."""
    xtl, ytl, xbr, ybr = roi
    crop = np.array(response["mask"])
    full = np.zeros((height, width), dtype=crop.dtype)
    try:
        full[ytl:ybr, xtl:xbr] = crop
    except ValueError as error:  # CVAT does not catch this: the request fails with a 500
        raise CvatRejects(f"CVAT cannot paste the mask into the region of interest: {error}") from None
    return {**response, "mask": full.tolist()}


def check_tracker_response(response: dict[str, Any], count: int, supported_shape_types: list[str] | None) -> None:
    """One shape and one state per object, no nulls, shapes in the form CVAT expects, states small."""
    shapes, states = response.get("shapes"), response.get("states")
    if not isinstance(shapes, list) or not isinstance(states, list):
        raise CvatRejects("a tracker answers with 'shapes' and 'states' lists")
    if len(shapes) != count or len(states) != count:
        raise CvatRejects(f"{count} objects asked, {len(shapes)} shapes and {len(states)} states answered")
    for shape in shapes:
        if shape is None:
            raise CvatRejects("a null shape (the UI reads shape.points of each)")
        if supported_shape_types is None:  # legacy: bare point lists, rectangles implied
            check_points("rectangle", shape)
        else:
            if not isinstance(shape, dict) or shape.get("type") not in supported_shape_types:
                raise CvatRejects(f"shape {shape!r} is not one of {supported_shape_types}")
            check_points(shape["type"], shape["points"])
    for state in states:
        signed = json.dumps(state, separators=(",", ":"))  # what CVAT signs and sends through the browser
        if len(signed) > 2048:
            raise CvatRejects(f"a state of {len(signed)} bytes travels with every request: keep it small")


def cvat_round_trip(states: list[Any]) -> list[Any]:
    """The states as CVAT hands them back: ``json.loads`` of the signed ``json.dumps``."""
    return [json.loads(json.dumps(state, separators=(",", ":"))) for state in states]
