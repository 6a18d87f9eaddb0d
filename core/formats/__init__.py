"""Dataset formats the CLI (and any other caller) can write results in.

Images (``gsam2 image|autolabel --format``): ``json`` (the reference's file per
image, written by the CLI itself), ``coco`` (:class:`CocoWriter`), ``yolo``
(:class:`YoloWriter`), orchestrated per run by :class:`ImageDatasetWriter`.
Videos (``gsam2 video --format``): ``jsonl`` (the CLI's own), ``mot``
(:class:`MotWriter`), ``mots`` (:class:`MotsWriter`), ``ytvis``
(:class:`YtvisWriter`), orchestrated by :class:`VideoDatasetWriter`.

Every writer is a plain class fed one image's or one frame's results at a time
(the objects of the reference JSON / the JSONL line: ``class_name``, ``bbox``
xyxy, ``score``, ``segmentation`` COCO RLE, and ``id`` for videos), so the CLI,
the CVAT command or a Ray job can drive it; each writes its final file
atomically when closed, and keeps only small indexes in memory.
"""

from .classes import ClassList
from .coco import CocoWriter
from .images import IMAGE_FORMATS, ImageDatasetWriter
from .video import VIDEO_FORMATS, MotsWriter, MotWriter, VideoDatasetWriter, YtvisWriter
from .yolo import YoloWriter, mask_polygon

__all__ = [
    "IMAGE_FORMATS",
    "VIDEO_FORMATS",
    "ClassList",
    "CocoWriter",
    "ImageDatasetWriter",
    "MotWriter",
    "MotsWriter",
    "VideoDatasetWriter",
    "YoloWriter",
    "YtvisWriter",
    "mask_polygon",
]
