"""The dataset files of an image run: ``annotations.json`` (COCO), ``labels/`` + ``data.yaml`` (YOLO), ``images/``.

Layout of ``OUT`` (``json`` is the CLI's file per image and is not written here)::

    OUT/images/<name><ext>    a symbolic link to each input image that was labelled
    OUT/annotations.json      coco: file_name = "<name><ext>", relative to images/
    OUT/labels/<name>.txt     yolo: one line per object
    OUT/data.yaml             yolo: class names; train and val = images/

The links give both formats the folder layout their readers expect (Ultralytics
and FiftyOne find ``labels/x.txt`` from ``images/x.jpg``) without copying the
images; ``<name>`` is the run's output name of the image, so it is unique.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OutputError
from ..outputs import OUTPUT_FOLDER
from .classes import ClassList
from .coco import CocoWriter, is_our_coco_file
from .yolo import YoloWriter, is_our_data_yaml, object_polygon

IMAGE_FORMATS = ("json", "coco", "yolo")


def link_name(name: str, image_path: Path) -> str:
    """``images/`` entry of an input: its output name plus its extension (``photo`` + ``.jpg``)."""
    return f"{name}{Path(image_path).suffix}"


def check_dataset_outputs(
    output: Path, names: Sequence[str], files: Sequence[Path], formats: Sequence[str], setting: str = OUTPUT_FOLDER
) -> None:
    """Raise ``InputError`` (one line) if a dataset file of this run would replace something gsam2 did not write.

    Ours: an ``annotations.json`` or ``data.yaml`` carrying our mark, the labels
    of a folder whose ``data.yaml`` is ours, and links in ``images/``. ``setting``
    names the output folder in the message, in the caller's spelling (``--output``).
    """
    if "coco" not in formats and "yolo" not in formats:
        return
    refuse = setting + " would replace {}, which gsam2 did not write: move it away, or choose another output folder"

    def ours(path: Path, check) -> bool:
        try:
            return path.is_file() and not path.is_symlink() and check(path)
        except OSError:
            return False

    coco, yaml = output / "annotations.json", output / "data.yaml"
    if "coco" in formats and os.path.lexists(coco) and not ours(coco, is_our_coco_file):
        raise InputError(refuse.format(coco))
    if "yolo" in formats:
        if os.path.lexists(yaml) and not ours(yaml, is_our_data_yaml):
            raise InputError(refuse.format(yaml))
        yaml_ours = os.path.lexists(yaml)
        for name in names:
            label = output / "labels" / f"{name}.txt"
            if os.path.lexists(label) and not yaml_ours:
                raise InputError(refuse.format(label))
    for name, path in zip(names, files):
        link = output / "images" / link_name(name, path)
        if os.path.lexists(link) and not link.is_symlink():
            raise InputError(refuse.format(link))


class ImageDatasetWriter:
    """Feed it each labelled image (in input order); :meth:`close` writes the files that are assembled at the end.

    ``phrases``: the prompt's phrases, the first classes in prompt order; other
    class names (prompt-free detectors, ``autolabel``'s caption phrases) follow
    in the order the images bring them.
    """

    def __init__(self, output: str | Path, formats: Sequence[str], phrases: Sequence[str] = ()):
        self.output = Path(output)
        self.classes = ClassList(phrases)
        self.coco = CocoWriter(self.output / "annotations.json", self.classes) if "coco" in formats else None
        self.yolo = YoloWriter(self.output, self.classes) if "yolo" in formats else None

    @property
    def active(self) -> bool:
        return self.coco is not None or self.yolo is not None

    def add(self, image_path: str | Path, name: str, record: dict[str, Any], polygons=None) -> None:
        """One image's reference-JSON ``record`` (:func:`~..exports.detections_to_record`), output name ``name``."""
        if not self.active:
            return
        file_name = link_name(name, Path(image_path))
        self._link(Path(image_path), self.output / "images" / file_name)
        width, height, objects = record["img_width"], record["img_height"], record["annotations"]
        if self.coco is not None:
            self.coco.add_image(file_name, width, height, objects)
        if self.yolo is not None:
            self.yolo.add_image(name, width, height, objects, polygons)

    @staticmethod
    def _link(source: Path, link: Path) -> None:
        """``link`` -> ``source`` (absolute), replacing an earlier run's link atomically."""
        target = os.path.abspath(source)
        try:
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() and os.readlink(link) == target:
                return
            temporary = link.with_name(f".{link.name}.{os.getpid()}.link")
            temporary.unlink(missing_ok=True)
            os.symlink(target, temporary)
            os.replace(temporary, link)
        except OSError as error:
            raise OutputError(f"{link}: cannot link it to {target} ({error.strerror or error})") from error

    def close(self) -> None:
        """Write ``annotations.json`` and ``data.yaml`` with every image added so far."""
        try:
            if self.coco is not None:
                self.coco.close()
        finally:
            if self.yolo is not None:
                self.yolo.close()


def yolo_outlines(record: dict[str, Any], formats: Sequence[str]) -> list[np.ndarray] | None:
    """The slow part of :meth:`ImageDatasetWriter.add` (each mask's outline), for a writer thread to make
    beforehand when ``formats`` has ``"yolo"``; pass the result to ``add``."""
    return [object_polygon(obj) for obj in record["annotations"]] if "yolo" in formats else None
