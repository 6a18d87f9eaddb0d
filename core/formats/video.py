"""Track datasets from a video run's frames: MOT Challenge, MOTS and YouTube-VIS files.

Each writer takes one frame at a time: ``add_frame(frame_index, objects)``
with the objects of a ``gsam2 video`` JSONL line (``id``, ``class_name``,
``bbox`` xyxy in pixels, ``score``, ``segmentation`` COCO RLE). Track ids are
the JSONL's ids. Frame numbers in MOT and MOTS are ``frame_index + 1`` (both
formats count from 1; ``frame_index`` is the video's 0-based frame, so
``--start-frame``/``--stride`` runs keep pointing at the right frames).

Layout of ``OUT`` for a video ``<stem>.<ext>``::

    OUT/mot/<stem>.txt        frame,id,x,y,w,h,conf,-1,-1,-1          (MOT Challenge 2D box, tracker file)
    OUT/mots/<stem>.txt       frame id class_id height width rle      (MOTS Challenge text)
    OUT/ytvis/<stem>.json     {"videos", "categories", "annotations"} (YouTube-VIS 2019/2021)

A folder of ``<sequence>.txt`` files is what ``gsam2 eval`` (and trackeval's
MOT Challenge tracker layout) reads. Files are written under a temporary name
and renamed by ``close()``; an interrupted run still closes them with the
frames it finished.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from pycocotools import mask as mask_utils

from ..errors import InputError
from ..exports import rle_to_mask
from ..outputs import GSAM2_MARK, OUTPUT_FOLDER, atomic_save
from .classes import ClassList
from .coco import rle_area
from .spool import JsonSpool

VIDEO_FORMATS = ("jsonl", "mot", "mots", "ytvis")
#: A file in mot/ and mots/ saying gsam2 writes there: a later run replaces its own files only.
FOLDER_MARK = ".written-by-gsam2"


def _xywh(bbox: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in bbox)
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


class _TextTrackFile:
    """A text file written line by line under a temporary name, renamed into place by :meth:`close`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        (self.path.parent / FOLDER_MARK).write_text(GSAM2_MARK + "\n")
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        self._temporary = Path(temporary)
        self._file: IO[str] = os.fdopen(handle, "w", encoding="ascii")
        os.chmod(self._temporary, 0o666 & ~_umask())  # as open() would create it (mkstemp makes 0o600)

    def write_lines(self, lines: Sequence[str]) -> None:
        self._file.write("".join(line + "\n" for line in lines))

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.close()
        os.replace(self._temporary, self.path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class MotWriter(_TextTrackFile):
    """MOT Challenge 2D boxes: ``frame,id,x,y,w,h,conf,-1,-1,-1`` per object and frame (frames from 1)."""

    def add_frame(self, frame_index: int, objects: Sequence[dict[str, Any]]) -> None:
        lines = []
        for obj in objects:
            x, y, w, h = _xywh(obj["bbox"])
            lines.append(f"{frame_index + 1},{int(obj['id'])},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{obj['score']:.4f},-1,-1,-1")
        self.write_lines(lines)


def exclusive_masks(objects: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    """The objects' masks with every pixel given to one object only: the highest-scoring one that covers it.

    MOTS allows no overlap (trackeval's MOTS reader rejects overlapping masks);
    SAM 2 can give two tracked objects the same pixels.
    """
    masks = [rle_to_mask(obj["segmentation"]) for obj in objects]
    taken = np.zeros_like(masks[0]) if masks else None
    exclusive: list[np.ndarray | None] = [None] * len(masks)
    for i in sorted(range(len(masks)), key=lambda i: -float(objects[i]["score"])):
        exclusive[i] = masks[i] & ~taken
        taken |= exclusive[i]
    return exclusive  # type: ignore[return-value]


class MotsWriter(_TextTrackFile):
    """MOTS Challenge text: ``frame id class_id height width rle`` per object and frame (frames from 1).

    ``class_id`` is the class's index in the shared :class:`ClassList` plus 1.
    Overlapping pixels go to the higher-scoring object (:func:`exclusive_masks`);
    an object left with no pixel is not written for that frame.
    """

    def __init__(self, path: str | Path, classes: ClassList | None = None):
        super().__init__(path)
        self.classes = classes if classes is not None else ClassList()

    def add_frame(self, frame_index: int, objects: Sequence[dict[str, Any]]) -> None:
        objects = [obj for obj in objects if obj.get("segmentation") is not None]
        lines = []
        for obj, mask in zip(objects, exclusive_masks(objects)):
            if not mask.any():
                continue
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            height, width = (int(v) for v in rle["size"])
            class_id = self.classes.index(str(obj["class_name"])) + 1
            lines.append(f"{frame_index + 1} {int(obj['id'])} {class_id} {height} {width} {rle['counts'].decode('ascii')}")
        self.write_lines(lines)


class YtvisWriter:
    """YouTube-VIS JSON: one video, the categories, one annotation per track with a value for every frame.

    ``segmentations``, ``bboxes`` (xywh) and ``areas`` hold one entry per
    processed frame, ``null`` where the track is absent. A track's
    ``category_id`` is its most frequent class, its ``score`` the mean of its
    frames' scores. Frames go to a temporary file as they come; only each
    track's list of (frame position, file offset) stays in memory, and
    :meth:`close` assembles the file one track at a time.
    ``file_names`` are ``<stem>/<frame_index:05d>.jpg``: the names
    ``ffmpeg -i VIDEO -start_number 0 <stem>/%05d.jpg`` gives the frames.
    """

    def __init__(self, path: str | Path, stem: str, classes: ClassList | None = None):
        self.path = Path(path)
        self.stem = stem
        self.classes = classes if classes is not None else ClassList()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._spool = JsonSpool(self.path.parent)
        self._frames: list[int] = []  # frame_index of each processed frame
        self._size: tuple[int, int] | None = None
        self._where: dict[int, list[tuple[int, int]]] = defaultdict(list)  # track id -> (position, offset)
        self._class_counts: dict[int, Counter] = defaultdict(Counter)
        self._score_sums: dict[int, float] = defaultdict(float)
        self._closed = False

    def add_frame(self, frame_index: int, objects: Sequence[dict[str, Any]], size: tuple[int, int] | None = None) -> None:
        """One frame; ``size`` (height, width) is needed only while no object has given it."""
        position = len(self._frames)
        self._frames.append(int(frame_index))
        if self._size is None and size is not None:
            self._size = (int(size[0]), int(size[1]))
        for obj in objects:
            track = int(obj["id"])
            segmentation = obj.get("segmentation")
            if segmentation is not None and self._size is None:
                self._size = (int(segmentation["size"][0]), int(segmentation["size"][1]))
            entry = {
                "segmentation": segmentation,
                "bbox": _xywh(obj["bbox"]),
                "area": rle_area(segmentation) if segmentation is not None else None,
            }
            self._where[track].append((position, self._spool.append(entry)))
            self._class_counts[track][self.classes.index(str(obj["class_name"]))] += 1
            self._score_sums[track] += float(obj["score"])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            atomic_save(self.path, self._write)
        finally:
            self._spool.close()

    def _write(self, temporary: Path) -> None:
        length = len(self._frames)
        height, width = self._size or (0, 0)
        video = {
            "id": 1,
            "name": self.stem,
            "width": width,
            "height": height,
            "length": length,
            "file_names": [f"{self.stem}/{index:05d}.jpg" for index in self._frames],
            "frame_indices": self._frames,  # the video's own 0-based frame numbers (YouTube-VIS ignores extra keys)
        }
        with open(temporary, "w", encoding="utf-8") as out:
            info = {"description": GSAM2_MARK, "version": "1.0"}
            out.write('{"info": ' + json.dumps(info) + ', "licenses": [],\n"videos": [' + json.dumps(video) + "],\n")
            out.write('"categories": ' + json.dumps(self.classes.coco_categories()) + ',\n"annotations": [')
            for number, track in enumerate(sorted(self._where), start=1):
                segmentations: list[Any] = [None] * length
                bboxes: list[Any] = [None] * length
                areas: list[Any] = [None] * length
                for position, offset in self._where[track]:
                    entry = self._spool.read_at(offset)
                    segmentations[position], bboxes[position], areas[position] = (
                        entry["segmentation"],
                        entry["bbox"],
                        entry["area"],
                    )
                frames = len(self._where[track])
                annotation = {
                    "id": number,
                    "video_id": 1,
                    "track_id": track,
                    "category_id": self._class_counts[track].most_common(1)[0][0] + 1,
                    "iscrowd": 0,
                    "score": round(self._score_sums[track] / frames, 4),
                    "height": height,
                    "width": width,
                    "length": 1,  # as YouTube-VIS's own files have it
                    "segmentations": segmentations,
                    "bboxes": bboxes,
                    "areas": areas,
                }
                out.write(("\n" if number == 1 else ",\n") + json.dumps(annotation))
            out.write("]}\n")


def video_outputs(output: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    """The files a video run writes for ``formats`` (besides the JSONL and the MP4)."""
    paths = {"mot": output / "mot" / f"{stem}.txt", "mots": output / "mots" / f"{stem}.txt", "ytvis": output / "ytvis" / f"{stem}.json"}
    return [paths[name] for name in formats if name in paths]


def check_video_outputs(output: Path, stem: str, formats: Sequence[str], setting: str = OUTPUT_FOLDER) -> None:
    """Raise ``InputError`` if a dataset file of this run would replace one gsam2 did not write.

    ``setting`` names the output folder in the message, in the caller's spelling (``--output``).
    """
    for path in video_outputs(output, stem, formats):
        if not os.path.lexists(path):
            continue
        ours = path.is_file() and not path.is_symlink()
        if ours and path.suffix == ".txt":
            ours = (path.parent / FOLDER_MARK).is_file()
        elif ours:
            with open(path, "rb") as file:
                ours = json.dumps(GSAM2_MARK).encode() in file.read(200)
        if not ours:
            raise InputError(
                f"{setting} would replace {path}, which gsam2 did not write: move it away, or choose another output folder"
            )


class VideoDatasetWriter:
    """The MOT / MOTS / YouTube-VIS files of one video run; feed it every frame in order, then :meth:`close`."""

    def __init__(self, output: str | Path, stem: str, formats: Sequence[str], phrases: Sequence[str] = ()):
        output = Path(output)
        self.classes = ClassList(phrases)
        self.writers: list[Any] = []
        if "mot" in formats:
            self.writers.append(MotWriter(output / "mot" / f"{stem}.txt"))
        if "mots" in formats:
            self.writers.append(MotsWriter(output / "mots" / f"{stem}.txt", self.classes))
        if "ytvis" in formats:
            self.writers.append(YtvisWriter(output / "ytvis" / f"{stem}.json", stem, self.classes))

    def add_frame(self, frame_index: int, objects: Sequence[dict[str, Any]], size: tuple[int, int] | None = None) -> None:
        for writer in self.writers:
            if isinstance(writer, YtvisWriter):
                writer.add_frame(frame_index, objects, size)
            else:
                writer.add_frame(frame_index, objects)

    def close(self) -> None:
        errors = []
        for writer in self.writers:
            try:
                writer.close()
            except Exception as error:  # noqa: BLE001 - close the others, then raise the first
                errors.append(error)
        if errors:
            raise errors[0]
