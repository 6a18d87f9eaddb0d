"""A COCO instances file, streamed: one image's results at a time, assembled atomically at the end."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from ..outputs import GSAM2_MARK, atomic_save
from .classes import ClassList
from .spool import JsonSpool

#: ``info.description`` of every COCO file we write: a later run knows the file as its own to replace.
COCO_DESCRIPTION = GSAM2_MARK


def _rle_bytes(segmentation: dict[str, Any]) -> dict[str, Any]:
    counts = segmentation["counts"]
    return {"size": list(segmentation["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def rle_area(segmentation: dict[str, Any]) -> int:
    """Pixels of a COCO RLE (``counts`` str or bytes), from the runs alone (pycocotools ``area``)."""
    return int(mask_utils.area(_rle_bytes(segmentation)))


def coco_annotation(obj: dict[str, Any], annotation_id: int, image_id: int, category_id: int) -> dict[str, Any]:
    """One COCO annotation from one object of the reference JSON (``bbox`` xyxy, ``segmentation`` RLE, ``score``).

    With a mask, ``bbox`` is the mask's tight box (``pycocotools.mask.toBbox``)
    and ``area`` its pixel count, as COCO's own annotations have them; FiftyOne's
    importer crops each mask to its ``bbox`` (fiftyone/utils/coco.py,
    ``_coco_segmentation_to_mask``), so a mask reaching past the detector's box
    would lose pixels there. The detector's box is kept as ``detector_bbox``
    (xywh). Without a mask (or with an empty one), ``bbox`` is the detector's
    box. ``segmentation`` stays the compressed RLE: ``iscrowd: 0`` with an RLE
    is what ``COCO.loadRes`` makes of mask results too, and pycocotools and
    FiftyOne read it.
    """
    x1, y1, x2, y2 = (float(v) for v in obj["bbox"])
    detector_box = [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]
    annotation: dict[str, Any] = {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": detector_box,
        "area": float((x2 - x1) * (y2 - y1)),
        "iscrowd": 0,
        "score": obj["score"],
    }
    segmentation = obj.get("segmentation")
    if segmentation is not None:
        annotation["segmentation"] = {"size": list(segmentation["size"]), "counts": segmentation["counts"]}
        area = rle_area(segmentation)
        if area:
            annotation["area"] = float(area)
            annotation["bbox"] = [float(v) for v in mask_utils.toBbox(_rle_bytes(segmentation))]
            annotation["detector_bbox"] = detector_box
    if "mask_score" in obj:
        annotation["mask_score"] = obj["mask_score"]
    if "id" in obj:  # a video frame's object: its track id (COCO ignores unknown keys)
        annotation["track_id"] = obj["id"]
    return annotation


class CocoWriter:
    """Write a COCO instances file (``annotations.json``) one image at a time.

    Images and annotations go to temporary files as they come; :meth:`close`
    writes ``{"info", "licenses", "categories", "images", "annotations"}`` to a
    temporary name and renames it, so memory does not grow with the number of
    images and the file is never seen half-written. Categories are the shared
    :class:`ClassList` (the prompt's phrases in prompt order, then names first
    seen), ``id = index + 1``.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> writer = CocoWriter(folder / "annotations.json", ClassList(["cat"]))
    >>> writer.add_image("a.jpg", 4, 3, [{"class_name": "cat", "bbox": [0, 0, 2, 2], "score": 0.9}])
    1
    >>> writer.close()
    >>> json.loads((folder / "annotations.json").read_text())["annotations"][0]["bbox"]
    [0.0, 0.0, 2.0, 2.0]
    """

    def __init__(self, path: str | Path, classes: ClassList | None = None):
        self.path = Path(path)
        self.classes = classes if classes is not None else ClassList()
        self._images = JsonSpool(self.path.parent)
        self._annotations = JsonSpool(self.path.parent)
        self._next_image_id = 1
        self._closed = False

    def add_image(
        self,
        file_name: str,
        width: int,
        height: int,
        objects: Sequence[dict[str, Any]],
        image_id: int | None = None,
        **extra: Any,
    ) -> int:
        """Add one image and its objects (the reference JSON's ``annotations``); return its image id."""
        image_id = self._next_image_id if image_id is None else int(image_id)
        self._next_image_id = max(self._next_image_id, image_id + 1)
        self._images.append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height), **extra})
        for obj in objects:
            category_id = self.classes.index(str(obj["class_name"])) + 1
            self._annotations.append(coco_annotation(obj, self._annotations.count + 1, image_id, category_id))
        return image_id

    def close(self) -> None:
        """Write the file (atomically) and drop the temporary data. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:

            def write(temporary: Path) -> None:
                with open(temporary, "w", encoding="utf-8") as out:
                    info = {"description": COCO_DESCRIPTION, "version": "1.0"}
                    out.write('{"info": ' + json.dumps(info) + ', "licenses": [],\n"categories": ')
                    out.write(json.dumps(self.classes.coco_categories()))
                    out.write(',\n"images": ')
                    self._images.write_array(out)
                    out.write(',\n"annotations": ')
                    self._annotations.write_array(out)
                    out.write("}\n")

            atomic_save(self.path, write)
        finally:
            self._images.close()
            self._annotations.close()


def is_our_coco_file(path: Path) -> bool:
    """Whether ``path`` starts as :class:`CocoWriter` writes (its ``info.description`` is our mark)."""
    with open(path, "rb") as file:
        head = file.read(200)
    return head.startswith(b'{"info": ') and json.dumps(COCO_DESCRIPTION).encode() in head
