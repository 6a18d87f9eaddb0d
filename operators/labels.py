"""Conversions between the core's ``supervision.Detections`` and FiftyOne labels.

FiftyOne stores a box as relative ``[x, y, w, h]`` and a mask that covers only
the box. Boxes are snapped outward to whole pixels first, so that the mask crop
and the box cover exactly the same pixels and nothing shifts when the App
stretches the mask over the box.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
from PIL import Image

from ..core.masks import box_crop

#: Attribute set on every label an operator writes, so a re-run can replace
#: exactly its own labels and leave everyone else's alone.
SOURCE_ATTRIBUTE = "gsam2_source"


def pixel_box(xyxy: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Snap a float pixel box outward to whole pixels inside the image, at least 1×1."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    left = min(max(math.floor(x1), 0), width - 1)
    top = min(max(math.floor(y1), 0), height - 1)
    right = max(min(math.ceil(x2), width), left + 1)
    bottom = max(min(math.ceil(y2), height), top + 1)
    return left, top, right, bottom


def relative_box(box: tuple[int, int, int, int], width: int, height: int) -> list[float]:
    """Whole-pixel ``(left, top, right, bottom)`` to FiftyOne's relative ``[x, y, w, h]``."""
    left, top, right, bottom = box
    return [left / width, top / height, (right - left) / width, (bottom - top) / height]


def box_from_relative(bounding_box: list[float], width: int, height: int) -> np.ndarray:
    """FiftyOne's relative ``[x, y, w, h]`` to pixel ``xyxy``."""
    x, y, w, h = bounding_box
    return np.array([x * width, y * height, (x + w) * width, (y + h) * height], dtype=np.float32)


def _optional_float(values: np.ndarray | None, index: int) -> float | None:
    if values is None or np.isnan(values[index]):
        return None
    return float(values[index])


def write_mask_png(mask: np.ndarray, path: Path) -> str:
    """Write a box-sized boolean mask as a single-channel PNG (255 = object); return its absolute path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255, mode="L").save(path)
    return str(path.resolve())


def to_fiftyone_detections(
    detections: sv.Detections,
    image_size: tuple[int, int],
    source: str,
    mask_paths: list[Path] | None = None,
    extra_attributes: list[dict[str, Any]] | None = None,
):
    """Convert one image's detections to ``fo.Detections``.

    Args:
        detections: pixel ``xyxy``, full-frame masks, confidence, ``class_name``.
        image_size: ``(height, width)`` of the image the detections belong to.
        source: written to :data:`SOURCE_ATTRIBUTE` on every detection.
        mask_paths: if given, one PNG path per detection: masks are written
            there and referenced with ``mask_path`` instead of stored in the database.
        extra_attributes: per detection, extra fields to set (e.g. a link to a source label).
    """
    import fiftyone as fo

    height, width = image_size
    names = detections.data.get("class_name", [])
    mask_scores = detections.data.get("mask_score")
    labels = []
    for i in range(len(detections)):
        box = pixel_box(detections.xyxy[i], width, height)
        label = fo.Detection(
            label=str(names[i]),
            bounding_box=relative_box(box, width, height),
            confidence=_optional_float(detections.confidence, i),
        )
        if detections.mask is not None:
            left, top, right, bottom = box
            crop = box_crop(detections.mask, i, left, top, right, bottom)  # dense or CompactMask
            if mask_paths is not None:
                label.mask_path = write_mask_png(crop, mask_paths[i])
            else:
                label.mask = crop.copy()
        if mask_scores is not None:
            label["mask_score"] = float(mask_scores[i])
        label[SOURCE_ATTRIBUTE] = source
        for key, value in (extra_attributes[i] if extra_attributes else {}).items():
            label[key] = value
        labels.append(label)
    return fo.Detections(detections=labels)


def written_by(label, source: str) -> bool:
    """Whether ``label`` was written by ``source`` (see :data:`SOURCE_ATTRIBUTE`)."""
    return label.has_field(SOURCE_ATTRIBUTE) and label[SOURCE_ATTRIBUTE] == source


def merge_detections(existing, new, source: str):
    """Keep the labels in ``existing`` that ``source`` did not write, then add ``new``."""
    import fiftyone as fo

    kept = [d for d in existing.detections if not written_by(d, source)] if existing is not None else []
    return fo.Detections(detections=kept + list(new.detections))
