"""``--resume``: which inputs already have complete results, so a re-run does only the rest.

A result counts as complete only when its files parse as what this input's run writes: the JSON record of
*this* image (its ``image_path``), with a caption for ``autolabel``, and a drawing that is ours and decodes
to the end; for a video, a JSON-lines file with one frame record per frame the video has, and its MP4.
Anything else is redone: a missing file, a half-written one, one of ours for another input. Files gsam2
did not write are still never replaced (:func:`~..core.outputs.check_not_foreign` refuses the run).

Our writers rename complete files into place (:func:`~..core.outputs.atomic_save`), so after a killed run
a final name holds either a whole file or nothing; the checks here also cover files cut short by other
means (a copy, a full disk outside our writes).
"""

from __future__ import annotations

import json
from pathlib import Path

#: How every image record starts (``json.dumps(record, indent=2)`` with ``image_path`` first).
RECORD_START = b'{\n  "image_path": '


def half_written_record(path: Path) -> bool:
    """Whether ``path`` starts as our image records do but does not parse: one of ours, cut short."""
    try:
        with open(path, "rb") as file:
            if file.read(len(RECORD_START)) != RECORD_START:
                return False
            file.seek(0)
            json.load(file)
    except (OSError, ValueError):
        return True
    return False


def image_result_complete(output: Path, stem: str, source: Path, draw: bool, caption: bool = False) -> bool:
    """Whether ``OUT/<stem>.json`` (and ``.jpg`` when drawing) are a complete result for the image ``source``."""
    try:
        with open(output / f"{stem}.json", "rb") as file:
            record = json.load(file)
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("image_path") != str(source):
        return False
    if not {"annotations", "img_width", "img_height"} <= record.keys() or (caption and "caption" not in record):
        return False
    return not draw or drawing_complete(output / f"{stem}.jpg")


def drawing_complete(path: Path) -> bool:
    """Whether ``path`` is a JPEG drawing of ours that decodes to its end."""
    from PIL import Image

    from ..core.outputs import GSAM2_MARK

    try:
        with Image.open(path) as image:
            if image.format != "JPEG" or image.info.get("comment") != GSAM2_MARK.encode():
                return False
            image.load()  # a file cut short raises here ("image file is truncated")
    except (OSError, ValueError, SyntaxError):
        return False
    return True


def video_result_complete(output: Path, stem: str, frames: int | None, draw: bool) -> bool:
    """Whether ``OUT/<stem>.jsonl`` holds ``frames`` frame records (and the MP4 is ours and opens).

    A video whose container does not give its frame count (``frames`` is ``None``) is always redone:
    without it, a JSON-lines file cut short by a killed run cannot be told from a complete one.
    """
    if not frames:
        return False
    try:
        with open(output / f"{stem}.jsonl", "rb") as file:
            lines = file.read().splitlines()
        records = [json.loads(line) for line in lines]
    except (OSError, ValueError):
        return False
    if len(records) != frames or not all(isinstance(r, dict) and {"frame_index", "objects"} <= r.keys() for r in records):
        return False
    if not draw:
        return True
    from ..core.outputs import written_by_gsam2

    return written_by_gsam2(output / f"{stem}.mp4")
