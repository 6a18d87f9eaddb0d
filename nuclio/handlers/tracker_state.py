"""The CVAT tracker's per-object state: small, JSON, and enough to resume anywhere.

CVAT keeps a tracker's states for the function: it signs each one
(``json.dumps`` of whatever the function returned), sends it through the
browser, and hands it back on the next frame for up to 8 hours
(``TRACKER_STATE_MAX_AGE`` in cvat/apps/lambda_manager/views.py). Since CVAT
2.40 no shape comes with a continuing request, so the state alone must be
enough to go on: after a restart, on another replica, or after this process
forgot the object. It therefore carries the object's last box and a coarse
mask inside that box (at most ``MASK_GRID`` x ``MASK_GRID`` cells, bit-packed),
about 300 bytes in all, besides the token that names the SAM 2 memory this
process may still hold (the fast path).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

VERSION = 1
# Cells of the coarse mask along its longer side.
MASK_GRID = 32
SHAPE_TYPES = ("rectangle", "polygon")


@dataclass(frozen=True)
class ObjectState:
    """What the tracker knows of one object after a frame."""

    token: str
    step: int  # frames tracked under this token; a memory at another step is stale
    shape_type: str  # "rectangle" or "polygon": what the object is answered as
    dict_form: bool  # shapes came as {"type", "points"} (CVAT with supported_shape_types), not bare lists
    box: tuple[float, float, float, float]  # last known xyxy in pixels
    mask: np.ndarray | None = None  # coarse bool mask inside the box, None when unknown

    @classmethod
    def new(cls, shape_type: str, dict_form: bool, box, mask: np.ndarray | None) -> ObjectState:
        return cls(secrets.token_hex(16), 0, shape_type, dict_form, _box(box), coarse_mask(mask, box))

    def advanced(self, box=None, mask: np.ndarray | None = None, steps: int = 1) -> ObjectState:
        """The state ``steps`` frames later: a new box and full-frame mask when the object was seen, else the last."""
        if box is None:
            return replace(self, step=self.step + steps)
        return replace(self, step=self.step + steps, box=_box(box), mask=coarse_mask(mask, box))

    def restarted(self) -> ObjectState:
        """The same object under a new token, for a new SAM 2 memory."""
        return replace(self, token=secrets.token_hex(16), step=0)

    def on_frame(self, width: int, height: int) -> ObjectState | None:
        """This state on a ``width`` x ``height`` frame: its box clipped to the frame, ``None`` if none of it is on it.

        A box of ours always lies inside the frame it was found on; one that does
        not was carried from a frame of another size, or forged. Its coarse mask
        covers the whole unclipped box, so it is dropped with the clipping.
        """
        x1, y1, x2, y2 = self.box
        box = (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))
        if box[2] <= box[0] or box[3] <= box[1]:
            return None
        return self if box == self.box else replace(self, box=_box(box), mask=None)

    def to_json(self) -> dict[str, Any]:
        state = {
            "v": VERSION,
            "token": self.token,
            "step": self.step,
            "type": self.shape_type,
            "dict": self.dict_form,
            "box": [round(v, 2) for v in self.box],
        }
        if self.mask is not None:
            state["mask"] = [*self.mask.shape, base64.b64encode(np.packbits(self.mask)).decode("ascii")]
        return state

    @classmethod
    def from_json(cls, state: Any) -> ObjectState | None:
        """The state CVAT handed back, or ``None`` if it is not one of ours (an older version's, a client's own)."""
        try:
            if not isinstance(state, dict) or state.get("v") != VERSION:
                return None
            token, step, shape_type = state["token"], state["step"], state["type"]
            box = tuple(float(v) for v in state["box"])
            if not (isinstance(token, str) and isinstance(step, int) and shape_type in SHAPE_TYPES and len(box) == 4):
                return None
            if not (np.isfinite(box).all() and box[0] < box[2] and box[1] < box[3]):
                return None
            mask = None
            if "mask" in state:
                height, width, packed = state["mask"]
                if not (0 < height <= MASK_GRID and 0 < width <= MASK_GRID):
                    return None
                bits = np.unpackbits(np.frombuffer(base64.b64decode(packed, validate=True), np.uint8))
                mask = bits[: height * width].reshape(height, width).astype(bool)
            return cls(token, step, shape_type, bool(state.get("dict", False)), box, mask)
        except (KeyError, TypeError, ValueError, binascii.Error):
            return None

    def full_mask(self, height: int, width: int) -> np.ndarray | None:
        """The coarse mask scaled back into its box on a ``height`` x ``width`` frame (``None`` if empty)."""
        if self.mask is None or not self.mask.any():
            return None
        x1, y1, x2, y2 = (int(round(v)) for v in self.box)
        x1, y1 = max(x1, 0), max(y1, 0)
        x2, y2 = min(max(x2, x1 + 1), width), min(max(y2, y1 + 1), height)
        if x2 <= x1 or y2 <= y1:
            return None
        cells = Image.fromarray(self.mask.astype(np.uint8) * 255)
        inside = np.asarray(cells.resize((x2 - x1, y2 - y1), Image.NEAREST)) > 127
        mask = np.zeros((height, width), bool)
        mask[y1:y2, x1:x2] = inside
        return mask if mask.any() else None


def _box(box) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in np.asarray(box, dtype=float).reshape(4))


def coarse_mask(mask: np.ndarray | None, box) -> np.ndarray | None:
    """The part of a full-frame mask inside ``box``, shrunk to at most ``MASK_GRID`` cells a side."""
    if mask is None:
        return None
    x1, y1, x2, y2 = (int(round(v)) for v in _box(box))
    crop = mask[max(y1, 0) : max(y2, y1 + 1), max(x1, 0) : max(x2, x1 + 1)]
    if crop.size == 0 or not crop.any():
        return None
    scale = min(1.0, MASK_GRID / max(crop.shape))
    size = (max(1, min(MASK_GRID, round(crop.shape[1] * scale))), max(1, min(MASK_GRID, round(crop.shape[0] * scale))))
    # BOX averaging keeps thin parts that nearest-neighbour sampling would skip.
    cells = Image.fromarray(crop.astype(np.uint8) * 255).resize(size, Image.BOX)
    return np.asarray(cells) >= 64
