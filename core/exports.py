"""What the core writes: COCO RLE JSON in the reference format, and annotated images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
from pycocotools import mask as mask_utils

from .detections import class_names
from .masks import coco_rle, mask_to_rle  # noqa: F401 - mask_to_rle is part of this module's API
from .outputs import GSAM2_MARK, atomic_save, atomic_write_text


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (``counts`` as str or bytes) back to a 2-D boolean mask."""
    counts = rle["counts"]
    encoded = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(encoded).astype(bool)


def detections_to_record(
    detections: sv.Detections,
    image_path: str | Path,
    image_size: tuple[int, int],
) -> dict[str, Any]:
    """One image's results in the reference Grounded-SAM-2 JSON format.

    ``score`` is the detector's confidence (the reference writes SAM 2's
    predicted IoU there); SAM 2's predicted IoU is kept as ``mask_score``.
    """
    height, width = image_size
    names = class_names(detections)
    mask_scores = detections.data.get("mask_score")
    annotations = []
    for i in range(len(detections)):
        annotation: dict[str, Any] = {
            "class_name": names[i],
            "bbox": [round(float(v), 2) for v in detections.xyxy[i]],
            "score": round(float(detections.confidence[i]), 4),
        }
        if detections.mask is not None:
            annotation["segmentation"] = coco_rle(detections.mask, i)  # from the crop when compact
        if mask_scores is not None:
            annotation["mask_score"] = round(float(mask_scores[i]), 4)
        annotations.append(annotation)
    return {
        "image_path": str(image_path),
        "annotations": annotations,
        "box_format": "xyxy",
        "img_width": int(width),
        "img_height": int(height),
    }


def detection_labels(detections: sv.Detections) -> list[str]:
    """``"<id> <class> <score>"`` labels for drawing (the id only when tracked)."""
    labels = []
    for i, name in enumerate(class_names(detections)):
        prefix = f"{int(detections.tracker_id[i])} " if detections.tracker_id is not None else ""
        score = f" {detections.confidence[i]:.2f}" if detections.confidence is not None else ""
        labels.append(f"{prefix}{name}{score}")
    return labels


def draw_detections(image: np.ndarray, detections: sv.Detections) -> np.ndarray:
    """Draw masks, boxes and labels on a copy of an RGB image with supervision's annotators."""
    canvas = np.ascontiguousarray(image.copy())
    if len(detections) == 0:
        return canvas
    # Colour by track id when tracking, else by class, so one object keeps one colour.
    lookup = sv.ColorLookup.TRACK if detections.tracker_id is not None else sv.ColorLookup.CLASS
    scale = max(canvas.shape[:2]) / 1000
    if detections.mask is not None:
        canvas = sv.MaskAnnotator(color_lookup=lookup, opacity=0.45).annotate(canvas, detections)
    canvas = sv.BoxAnnotator(color_lookup=lookup, thickness=max(1, round(2 * scale))).annotate(canvas, detections)
    canvas = sv.LabelAnnotator(
        color_lookup=lookup,
        text_scale=max(0.3, 0.5 * scale),
        text_thickness=max(1, round(scale)),
        text_padding=max(2, round(5 * scale)),
    ).annotate(canvas, detections, labels=detection_labels(detections))
    return canvas


def write_image_outputs(
    output: Path, stem: str, path: Path, image, detections, extra: dict, draw: bool = True, json_file: bool = True,
) -> tuple[int, dict]:
    """Encode (RLE, JSON, drawing) and write one image's files; return its number of objects and its record.

    The one writer of ``gsam2 image`` / ``autolabel`` results (:func:`~.image_files.label_files`'s write
    thread, on one machine and in each Ray actor): the same bytes either way. Each file is written under a
    temporary name and renamed, the JSON first, so a complete drawing means a complete JSON too.
    ``image`` is the decoded RGB array the detections were made on. ``json_file``: write
    the reference's per-image JSON (``--format json``); the record is returned either way, for the dataset
    files.
    """
    from PIL import Image

    from .masks import finish_masks  # looked up per call: bench/simulated_accelerator.py times it

    detections = finish_masks(detections)  # SAM 2's logits -> mask crops, off the model's thread
    record = {**detections_to_record(detections, path, image.shape[:2]), **extra}
    if json_file:
        atomic_write_text(output / f"{stem}.json", json.dumps(record, indent=2))
    if draw:
        drawing = Image.fromarray(draw_detections(image, detections))
        atomic_save(  # the comment tells a later run this file is ours to replace (check_not_foreign)
            output / f"{stem}.jpg",
            lambda temporary: drawing.save(temporary, "JPEG", quality=90, comment=GSAM2_MARK),
        )
    return len(detections), record
