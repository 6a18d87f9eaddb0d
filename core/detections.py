"""Small helpers around ``supervision.Detections``, the core's one exchange type."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv


def empty_detections(height: int, width: int, with_masks: bool = True) -> sv.Detections:
    """Detections with no objects, typed like full ones (so concatenation and exports just work)."""
    return sv.Detections(
        xyxy=np.zeros((0, 4), dtype=np.float32),
        mask=np.zeros((0, height, width), dtype=bool) if with_masks else None,
        confidence=np.zeros((0,), dtype=np.float32),
        class_id=np.zeros((0,), dtype=int),
        data={"class_name": np.array([], dtype=str)},
    )


def make_detections(
    xyxy: np.ndarray,
    confidence: np.ndarray,
    class_id: np.ndarray,
    phrases: Sequence[str],
) -> sv.Detections:
    """Build detections whose ``class_name`` is looked up from ``phrases`` by ``class_id``."""
    class_id = np.asarray(class_id, dtype=int)
    names = np.array([phrases[i] for i in class_id], dtype=str) if len(class_id) else np.array([], dtype=str)
    return sv.Detections(
        xyxy=np.asarray(xyxy, dtype=np.float32).reshape(-1, 4),
        confidence=np.asarray(confidence, dtype=np.float32),
        class_id=class_id,
        data={"class_name": names},
    )


def class_names(detections: sv.Detections) -> list[str]:
    """The class name of every detection, as plain strings."""
    return [str(name) for name in detections.data.get("class_name", [])]
