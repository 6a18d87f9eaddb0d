"""Ultralytics YOLO segmentation labels: one ``labels/<name>.txt`` per image and a ``data.yaml``.

Each line is ``<class index> x1 y1 x2 y2 ...``: one polygon per object, its
vertices divided by the image's width and height (Ultralytics' segment format,
which FiftyOne's ``YOLOv5Dataset`` importer reads too). A polygon is the mask's
outline through its boundary pixels (``cv2.findContours``), so ``cv2.fillPoly``
of it, as Ultralytics and FiftyOne draw it, gives back a one-piece mask
without holes exactly. The format has no holes (they come back filled), and
several pieces of one object are joined by zero-width seams (what Ultralytics'
own COCO converter does with ``merge_multi_segment``; the pixels a seam
crosses come back filled), so each object stays one line: supervision's
``detections_to_yolo_annotations`` writes one line per piece, which would count
one object several times. Coordinates keep 6 decimals: on images up to
100,000 pixels wide they round back to the same pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..exports import rle_to_mask
from ..outputs import GSAM2_MARK, atomic_write_text
from .classes import ClassList

#: The first line of every data.yaml we write: a later run knows the file (and its labels) as its own.
YAML_MARK = f"# {GSAM2_MARK}"


def _pieces(mask: np.ndarray) -> list[np.ndarray]:
    """The outer outline of each piece of the mask, largest first; ``(N, 2)`` int pixel arrays.

    Outer outlines only (``RETR_EXTERNAL``): Ultralytics (``polygon2mask``) and
    FiftyOne (``Polyline.to_detection``) draw a label's polygon with
    ``cv2.fillPoly``, which fills a hole even when a seam leads into it, so a
    hole cannot be carried in this format and joining holes in (supervision's
    ``bridge_holes``) would only add seam pixels.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    pieces = [c[:, 0, :] for c in contours]  # a 1- or 2-pixel piece too: fillPoly draws its edges
    return sorted(pieces, key=lambda p: -cv2.contourArea(p.astype(np.float32)))


def mask_polygon(mask: np.ndarray) -> np.ndarray | None:
    """One polygon (``(N, 2)`` pixel x, y) covering every piece of ``mask``; ``None`` for an empty mask.

    Pieces after the first are reached by a seam from the first vertex of the
    piece before and the path comes back along the same seams, so the seams
    enclose no area.
    """
    pieces = _pieces(np.asarray(mask, dtype=bool))
    if not pieces:
        return None
    # Short seams: each piece starts at its vertex nearest the previous piece's start (the first piece: nearest
    # the second's centre), since the pixels a seam crosses are filled when the polygon is drawn.
    if len(pieces) > 1:
        pieces[0] = _rotated(pieces[0], pieces[1].mean(axis=0))
        for k in range(1, len(pieces)):
            pieces[k] = _rotated(pieces[k], pieces[k - 1][0])
    path = []
    for piece in pieces:
        path.extend(piece.tolist())
        path.append(piece[0].tolist())  # close this piece where the seam to the next one starts
    path.extend(piece[0].tolist() for piece in reversed(pieces[:-1]))  # back along the seams
    return np.asarray(path, dtype=np.float64)


def _rotated(piece: np.ndarray, towards: np.ndarray) -> np.ndarray:
    """``piece``'s vertices, the same cycle, starting at the one nearest ``towards``."""
    start = int(np.argmin(((piece - towards) ** 2).sum(axis=1)))
    return np.roll(piece, -start, axis=0)


def object_polygon(obj: dict[str, Any]) -> np.ndarray:
    """The polygon of one reference-JSON object: its mask's outline, or its box when the mask is empty or absent."""
    segmentation = obj.get("segmentation")
    polygon = mask_polygon(rle_to_mask(segmentation)) if segmentation is not None else None
    if polygon is None:
        x1, y1, x2, y2 = (float(v) for v in obj["bbox"])
        polygon = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    return polygon


def yolo_line(class_index: int, polygon: np.ndarray, width: int, height: int) -> str:
    relative = np.clip(polygon / np.array([width, height], dtype=np.float64), 0.0, 1.0).reshape(-1)
    return f"{int(class_index)} " + " ".join(f"{value:.6f}" for value in relative)


class YoloWriter:
    """Write ``labels/<name>.txt`` per image as results come, and ``data.yaml`` at :meth:`close`.

    ``data.yaml`` names the classes (the shared :class:`ClassList`, index =
    line's class) and points ``train`` and ``val`` at ``images/`` next to it,
    where :class:`~.images.ImageDatasetWriter` links the input images: Ultralytics
    and FiftyOne find an image's labels by replacing ``/images/`` with
    ``/labels/`` in its path. No ``path:`` key, so Ultralytics takes the YAML's
    own folder and the dataset can be moved.
    """

    def __init__(self, folder: str | Path, classes: ClassList | None = None):
        self.folder = Path(folder)
        self.classes = classes if classes is not None else ClassList()
        (self.folder / "labels").mkdir(parents=True, exist_ok=True)

    def label_path(self, name: str) -> Path:
        return self.folder / "labels" / f"{name}.txt"

    def add_image(
        self,
        name: str,
        width: int,
        height: int,
        objects: Sequence[dict[str, Any]],
        polygons: Sequence[np.ndarray] | None = None,
    ) -> None:
        """Write the labels of image ``images/<name>.<ext>``; ``polygons`` (pixels) if already made, one per object."""
        if polygons is None:
            polygons = [object_polygon(obj) for obj in objects]
        lines = [
            yolo_line(self.classes.index(str(obj["class_name"])), polygon, width, height)
            for obj, polygon in zip(objects, polygons)
        ]
        atomic_write_text(self.label_path(name), "".join(line + "\n" for line in lines))

    def close(self) -> None:
        import yaml

        names = self.classes.names
        body = yaml.safe_dump(
            {"train": "images", "val": "images", "nc": len(names), "names": dict(enumerate(names))},
            sort_keys=False,
            allow_unicode=True,
        )
        atomic_write_text(self.folder / "data.yaml", f"{YAML_MARK}\n{body}")


def is_our_data_yaml(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(len(YAML_MARK.encode())) == YAML_MARK.encode()
