"""FiftyOne operators: thin adapters between FiftyOne datasets and the core."""

from __future__ import annotations

from .auto_label import AutoLabelOperator
from .florence2 import Florence2GroundAndSegment
from .ground_and_segment import GroundAndSegment
from .segment_with_sam2 import SegmentWithSam2
from .track_video import TrackVideo

#: Operator classes registered with FiftyOne; each must also be listed in fiftyone.yml.
OPERATOR_CLASSES: list[type] = [GroundAndSegment, Florence2GroundAndSegment, AutoLabelOperator, SegmentWithSam2, TrackVideo]


def register_operators(plugin) -> None:
    for operator_class in OPERATOR_CLASSES:
        plugin.register(operator_class)
