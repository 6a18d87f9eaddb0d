"""COCO box and mask AP between two COCO instances files, with pycocotools' ``COCOeval``.

Images are matched by ``file_name`` and classes by category ``name``, so the
two files may number them differently (a ground truth exported from CVAT or
FiftyOne and ``gsam2 image --format coco``'s output). Every problem with the
inputs is an :class:`~.errors.InputError` of one line naming the file.

    >>> result = evaluate_coco("gt/annotations.json", "out/annotations.json")  # doctest: +SKIP
    >>> result["box"]["AP"], result["mask"]["classes"]["cat"]["AP"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

#: ``COCOeval.stats`` positions reported (the first three: AP over IoU 0.5:0.95, at 0.5, at 0.75).
SUMMARY = {"AP": 0, "AP50": 1, "AP75": 2}


def read_coco(path: str | Path, option: str) -> dict[str, Any]:
    """The parsed file, checked to be a COCO instances file with images and annotations."""
    path = Path(path)
    where = f"{option} {path}"
    if not path.is_file():
        raise InputError(f"{where}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{where}: cannot be read as JSON ({error})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise InputError(f"{where}: not a COCO instances file (it needs lists of images, annotations and categories)")
    if not data["images"]:
        raise InputError(f"{where}: has no images")
    if not data["annotations"]:
        raise InputError(f"{where}: has no annotations")
    try:
        names = [str(c["name"]) for c in data["categories"]]
        file_names = [str(i["file_name"]) for i in data["images"]]
        ids = {i["id"] for i in data["images"]}
        for a in data["annotations"]:
            if a["image_id"] not in ids:
                raise InputError(f"{where}: annotation {a.get('id')} names image id {a['image_id']}, which it does not list")
            a["bbox"], a["category_id"]  # noqa: B018 - present in every annotation
    except (KeyError, TypeError) as error:
        raise InputError(f"{where}: an image, annotation or category lacks {error}") from None
    if len(set(names)) != len(names):
        raise InputError(f"{where}: two categories share a name")
    if len(set(file_names)) != len(file_names):
        raise InputError(f"{where}: two images share a file_name")
    return data


def _quiet(function, *args):
    """pycocotools prints its progress ("loading annotations...", "DONE (t=0.01s)"): keep the table clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)


def evaluate_coco(gt_path: str | Path, pred_path: str | Path) -> dict[str, Any]:
    """Box (and mask, when both files have masks) AP: ``{"box": {...}, "mask": {...} | None, "images", "classes"}``.

    Each kind holds ``AP``, ``AP50``, ``AP75`` over all classes (COCOeval's
    ``stats``: area "all", 100 detections per image) and ``classes``: ``{name:
    {"AP", "AP50", "AP75"}}`` for every ground-truth class (``None`` for a
    class with no ground truth object).

    Raises:
        InputError: unreadable or empty files, images that differ between the
            files, a predicted class the ground truth does not have, a
            prediction without ``score``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_data, pred_data = read_coco(gt_path, "--gt"), read_coco(pred_path, "--pred")
    gt_images = {i["file_name"]: i["id"] for i in gt_data["images"]}
    pred_images = {i["id"]: i["file_name"] for i in pred_data["images"]}
    missing = sorted(set(gt_images) - set(pred_images.values()))
    extra = sorted(set(pred_images.values()) - set(gt_images))
    if extra:
        raise InputError(f"--pred {pred_path}: image {extra[0]!r} is not in --gt {gt_path} (images are matched by file_name)")
    if missing:
        raise InputError(f"--pred {pred_path}: has no image {missing[0]!r}, which --gt {gt_path} has")
    gt_classes = {c["name"]: c["id"] for c in gt_data["categories"]}
    pred_classes = {c["id"]: c["name"] for c in pred_data["categories"]}
    for category_id in {a["category_id"] for a in pred_data["annotations"]}:
        name = pred_classes.get(category_id)
        if name is None:
            raise InputError(f"--pred {pred_path}: category id {category_id} is not in its categories")
        if name not in gt_classes:
            raise InputError(f"--pred {pred_path}: class {name!r} is not a class of --gt {gt_path} ({', '.join(gt_classes)})")

    results = []
    for a in pred_data["annotations"]:
        if "score" not in a:
            raise InputError(f"--pred {pred_path}: annotation {a.get('id')} has no score")
        result = {
            "image_id": gt_images[pred_images[a["image_id"]]],
            "category_id": gt_classes[pred_classes[a["category_id"]]],
            "bbox": a["bbox"],
            "score": float(a["score"]),
        }
        if a.get("segmentation"):
            result["segmentation"] = a["segmentation"]
        results.append(result)
    with_masks = all("segmentation" in r for r in results) and all(a.get("segmentation") for a in gt_data["annotations"])

    gt = COCO()
    gt.dataset = copy.deepcopy(gt_data)
    for a in gt.dataset["annotations"]:  # COCOeval reads these; some exporters leave them out
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2] * a["bbox"][3]))
    _quiet(gt.createIndex)
    out: dict[str, Any] = {"images": len(gt_images), "classes": list(gt_classes), "box": None, "mask": None}
    for kind, iou_type in (("box", "bbox"), ("mask", "segm")):
        if kind == "mask" and not with_masks:
            continue
        # loadRes with a bbox-only copy for boxes: given segmentations it would replace each bbox by the mask's box.
        detections = results if kind == "mask" else [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
        predictions = _quiet(gt.loadRes, copy.deepcopy(detections))
        evaluation = COCOeval(gt, predictions, iou_type)
        _quiet(evaluation.evaluate)
        _quiet(evaluation.accumulate)
        _quiet(evaluation.summarize)
        summary = {name: _score(evaluation.stats[i]) for name, i in SUMMARY.items()}
        # precision[T, R, K, A, M]: IoU thresholds x recall points x classes x area ranges x max detections;
        # area "all" is 0, 100 detections is the last; -1 marks no ground truth (COCOeval.accumulate).
        precision = evaluation.eval["precision"]
        classes = {}
        for k, category_id in enumerate(evaluation.params.catIds):
            name = gt.cats[category_id]["name"]
            per_threshold = precision[:, :, k, 0, -1]
            classes[name] = {
                "AP": _mean(per_threshold),
                "AP50": _mean(per_threshold[0]),
                "AP75": _mean(per_threshold[5]),
            }
        out[kind] = {**summary, "classes": classes}
    return out


def _mean(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else None


def _score(value: float) -> float | None:
    return None if value < 0 else float(value)
