"""Sliced inference (SAHI) for any detector: large images with many small objects.

Detectors resize the whole image to their input size (about 800 px for
Grounding DINO), so an object of a few dozen pixels in a 6000 px aerial photo
all but vanishes. Running the detector over overlapping tiles at their native
resolution finds them; ``supervision.InferenceSlicer`` cuts the tiles, moves
each tile's boxes back into image coordinates and merges duplicates across
tile borders. A pass over the whole image is added (as SAHI's
``perform_standard_pred`` does) so that objects larger than a tile are still
found whole.

Merging follows SAHI's default: greedy non-maximum *merging* with
intersection-over-smaller. A tile that sees only part of a big object yields a
box inside the whole-image box; IoU between the two is low, but the part lies
entirely inside the whole (IoS 1), so they merge into one box instead of
leaving a fragment behind.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv

from ..detections import empty_detections
from ..errors import InputError
from .base import MIN_RESIZED_SIDE, Detector, resized_side

DEFAULT_SLICE_SIZE = 640
DEFAULT_SLICE_OVERLAP = 128
DEFAULT_MERGE_IOU = 0.5


class SlicedDetector:
    """Wraps a detector so that every image is detected tile by tile, then merged.

    Args:
        detector: any :class:`~.base.Detector`.
        slice_wh: tile ``(width, height)`` in pixels.
        overlap_wh: overlap between neighbouring tiles ``(width, height)`` in pixels;
            make it at least the size of the objects you are after, so that each
            one lies whole inside some tile.
        merge_iou: boxes of the same class whose intersection over the smaller box
            exceeds this are merged into one.
        full_image: also detect on the whole image, for objects larger than a tile.
    """

    def __init__(
        self,
        detector: Detector,
        slice_wh: tuple[int, int] = (DEFAULT_SLICE_SIZE, DEFAULT_SLICE_SIZE),
        overlap_wh: tuple[int, int] = (DEFAULT_SLICE_OVERLAP, DEFAULT_SLICE_OVERLAP),
        merge_iou: float = DEFAULT_MERGE_IOU,
        full_image: bool = True,
    ):
        if min(slice_wh) < 1 or min(overlap_wh) < 0 or any(o >= s for o, s in zip(overlap_wh, slice_wh)):
            raise InputError(
                f"slice size {slice_wh} and overlap {overlap_wh}: the overlap must be at least 0 and smaller than the slice"
            )
        self.detector = detector
        self.slice_wh = tuple(int(v) for v in slice_wh)
        self.overlap_wh = tuple(int(v) for v in overlap_wh)
        self.merge_iou = merge_iou
        self.full_image = full_image

    # The wrapped detector's identity and abilities are this one's.
    @property
    def name(self) -> str:
        return f"{self.detector.name}+sliced"

    @property
    def requires_prompt(self) -> bool:
        return self.detector.requires_prompt

    @property
    def produces_masks(self) -> bool:
        return self.detector.produces_masks

    @property
    def device(self):
        return getattr(self.detector, "device", None)

    def validate_phrases(self, phrases: Sequence[str]) -> None:
        self.detector.validate_phrases(phrases)

    def detect(
        self,
        images: Sequence[np.ndarray],
        phrases: Sequence[str],
        box_threshold: float,
        text_threshold: float,
    ) -> list[sv.Detections]:
        return [
            self._detect_one(index, image, phrases, box_threshold, text_threshold) for index, image in enumerate(images)
        ]

    def _detect_one(
        self, index: int, image: np.ndarray, phrases, box_threshold: float, text_threshold: float
    ) -> sv.Detections:
        height, width = image.shape[:2]
        class_ids = _ClassIds(phrases)
        # What the detector shrinks an image to (Grounding DINO, OWL): a strip too thin for it whole (20000x100)
        # is still detected in tiles, which supervision cuts all alike, at most slice_wh (inference_slicer.py,
        # _generate_offset); only a tile that is itself too thin is refused.
        scale_of = getattr(self.detector, "resize_scale", None)
        tile_width, tile_height = min(width, self.slice_wh[0]), min(height, self.slice_wh[1])
        if scale_of is not None and resized_side(tile_height, tile_width, scale_of) < MIN_RESIZED_SIDE:
            raise InputError(
                f"image {index + 1} ({width}x{height}) is too elongated for {self.detector.name} even in "
                f"{tile_width}x{tile_height} tiles; crop it, or use smaller tiles"
            )

        def detect_tile(tile: np.ndarray) -> sv.Detections:
            found = self.detector.detect([tile], phrases, box_threshold, text_threshold)[0]
            return class_ids.renumber(found)

        slicer = sv.InferenceSlicer(
            callback=detect_tile,
            slice_wh=self.slice_wh,
            overlap_wh=self.overlap_wh,
            iou_threshold=self.merge_iou,
            overlap_filter=sv.OverlapFilter.NONE,  # merged once below, over tiles and the whole image together
        )
        parts = [slicer(image)]
        whole = self.full_image and (width > self.slice_wh[0] or height > self.slice_wh[1])
        if whole and scale_of is not None and resized_side(height, width, scale_of) < MIN_RESIZED_SIDE:
            whole = False  # shrunk to a line, the whole image shows nothing: the tiles are the detection
        if whole:
            parts.append(detect_tile(image))
        parts = [_plain(part) for part in parts if len(part)]
        if not parts:
            return empty_detections(height, width, with_masks=self.produces_masks)
        merged = sv.Detections.merge(parts).with_nmm(
            threshold=self.merge_iou, class_agnostic=False, overlap_metric=sv.OverlapMetric.IOS
        )
        return merged[np.argsort(-merged.confidence, kind="stable")]


class _ClassIds:
    """Keeps ``class_id`` consistent across tiles, so NMS compares like with like.

    Prompted detectors already number classes by phrase; prompt-free ones
    (Florence-2 ``<OD>``) number each call's names from 0, so those are
    renumbered by name across the whole image.
    """

    def __init__(self, phrases: Sequence[str]):
        self.ids = {phrase: index for index, phrase in enumerate(phrases)}

    def renumber(self, detections: sv.Detections) -> sv.Detections:
        names = [str(name) for name in detections.data.get("class_name", [])]
        for name in names:
            self.ids.setdefault(name, len(self.ids))
        detections.class_id = np.array([self.ids[name] for name in names], dtype=int)
        return detections


def _plain(detections: sv.Detections) -> sv.Detections:
    """Drop the slicer's metadata (it holds the whole source image) so merging stays cheap."""
    detections.metadata = {}
    return detections
