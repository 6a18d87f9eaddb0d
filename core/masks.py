"""SAM 2's low-resolution mask logits → masks that fit the image, upsampled only where a mask can be.

SAM 2 predicts 256x256 logits per object; a mask is those logits upsampled
bilinearly to the image size and thresholded at 0 (transformers'
``Sam2ImageProcessor.post_process_masks`` is ``F.interpolate(..., mode="bilinear",
align_corners=False) > 0``). Done for every pixel of the frame, that is N x H x W
floats of work and N x H x W bytes of bool masks (100 objects on a 4K image:
800 MB), almost all of it zeros.

A bilinear sample is a convex combination of (at most) 2x2 logits, so it can only
be positive next to a positive logit: each mask is upsampled only over the output
rows and columns whose source logits include a positive one (its *support*),
on the logits' device, and carried as a crop plus its offset in a
``supervision.CompactMask`` (crop RLE). Exports read the crops
(:func:`coco_rle`, :func:`box_crop`, :func:`mask_crop`) without building full frames.

The interpolation is written out here rather than called through ``F.interpolate``
so that every output pixel is computed by the same operations whatever the crop:
a crop is then bit-for-bit the same pixels as the full frame (:func:`dense_masks`).
It follows PyTorch's ``upsample_bilinear2d`` (align_corners=False) formula; the two
differ only by float rounding (about 1e-4 on logits of magnitude 10), so a mask
pixel can differ only where its logit is that close to 0 (checked in
tests/test_masks.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv
import torch
from pycocotools import mask as mask_utils

#: Mask-like values the helpers below accept: a dense ``(N, H, W)`` bool array or a CompactMask.
MaskStack = Any


@dataclass(frozen=True)
class _Axis:
    """Bilinear source indices and weights of every output position along one axis."""

    low: torch.Tensor  # (out,) first source index
    high: torch.Tensor  # (out,) second source index (== low at the last input position)
    low_weight: torch.Tensor  # (out,)
    high_weight: torch.Tensor  # (out,)
    low_on_host: np.ndarray  # the indices again, for finding supports without a device sync
    high_on_host: np.ndarray


_axes: dict[tuple[int, int, str], _Axis] = {}


def _axis(in_size: int, out_size: int, device: torch.device) -> _Axis:
    """PyTorch's ``compute_indices_weights_linear`` for align_corners=False, cached per size and device."""
    key = (in_size, out_size, str(device))
    if key not in _axes:
        scale = torch.tensor(in_size, dtype=torch.float32) / out_size
        source = (scale * (torch.arange(out_size, dtype=torch.float32) + 0.5) - 0.5).clamp(min=0)
        low = source.floor().long().clamp(max=in_size - 1)
        weight = (source - low).clamp(0, 1)
        high = (low + 1).clamp(max=in_size - 1)
        if len(_axes) > 64:  # a folder of many image sizes: keep the cache small
            _axes.clear()
        _axes[key] = _Axis(
            low.to(device), high.to(device), (1 - weight).to(device), weight.to(device), low.numpy(), high.numpy()
        )
    return _axes[key]


def _support(positive: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[int, int] | None:
    """Output range ``[start, stop)`` whose source indices reach a positive low-res line (``positive``: (in,) bool)."""
    lines = np.flatnonzero(positive)
    if not len(lines):
        return None
    # low/high are non-decreasing: the first output whose high index reaches the first positive
    # line, to the last output whose low index is still at or before the last one.
    start = int(np.searchsorted(high, lines[0], side="left"))
    stop = int(np.searchsorted(low, lines[-1], side="right"))
    return (start, stop) if start < stop else None  # downsampled: no output reads a positive line


def _upsample_region(logits: torch.Tensor, rows: _Axis, cols: _Axis, y0: int, y1: int, x0: int, x1: int):
    """Bilinear values of output rows ``[y0, y1)`` and columns ``[x0, x1)`` of one ``(h, w)`` logit map."""
    row_low, row_high = rows.low[y0:y1], rows.high[y0:y1]
    first = int(row_low[0])
    lines = logits[first : int(row_high[-1]) + 1]  # the low-res rows this region reads
    col_low, col_high = cols.low[x0:x1], cols.high[x0:x1]
    across = lines[:, col_low] * cols.low_weight[x0:x1] + lines[:, col_high] * cols.high_weight[x0:x1]
    return (
        across[row_low - first] * rows.low_weight[y0:y1, None]
        + across[row_high - first] * rows.high_weight[y0:y1, None]
    )


def dense_masks(logits: torch.Tensor, height: int, width: int) -> np.ndarray:
    """``(N, height, width)`` bool masks from ``(N, h, w)`` logits: :func:`compact_masks` placed in full frames."""
    return compact_masks(logits, height, width).to_dense()


def compact_masks(logits: torch.Tensor, height: int, width: int) -> sv.CompactMask:
    """A CompactMask of ``(N, h, w)`` logits upsampled to ``height x width``, computed only over each mask's support.

    Each crop covers the output pixels whose bilinear sources include a positive
    logit, so no mask pixel lies outside it; an empty mask is a 1x1 False crop
    at (0, 0), as ``CompactMask.from_dense`` stores one.
    """
    count, in_h, in_w = logits.shape
    logits = logits.float()
    rows, cols = _axis(in_h, height, logits.device), _axis(in_w, width, logits.device)
    positive = logits > 0
    # One transfer of the (N, h) and (N, w) positive-line flags, not one per mask.
    positive_rows, positive_cols = positive.any(dim=2).cpu().numpy(), positive.any(dim=1).cpu().numpy()
    regions: list[tuple[int, int, int, int] | None] = []
    crops: list[torch.Tensor] = []
    for index in range(count):
        y_range = _support(positive_rows[index], rows.low_on_host, rows.high_on_host)
        x_range = _support(positive_cols[index], cols.low_on_host, cols.high_on_host)
        if y_range is None or x_range is None:
            regions.append(None)
            continue
        (y0, y1), (x0, x1) = y_range, x_range
        regions.append((y0, y1, x0, x1))
        crops.append(_upsample_region(logits[index], rows, cols, y0, y1, x0, x1).gt(0).flatten())
    flat = torch.cat(crops).cpu().numpy() if crops else np.zeros(0, dtype=bool)  # one device-to-host copy
    rles, shapes, offsets, start = [], [], [], 0
    for region in regions:
        if region is None:
            crop = np.zeros((1, 1), dtype=bool)
            x0 = y0 = 0
        else:
            y0, y1, x0, x1 = region
            size = (y1 - y0) * (x1 - x0)
            crop = flat[start : start + size].reshape(y1 - y0, x1 - x0)
            start += size
        rles.append(np.asarray(sv.mask_to_rle(crop), dtype=np.int32))
        shapes.append(crop.shape)
        offsets.append((x0, y0))
    return sv.CompactMask(
        rles,
        np.array(shapes, dtype=np.int32).reshape(-1, 2),
        np.array(offsets, dtype=np.int32).reshape(-1, 2),
        (height, width),
    )


# ------------------------------------------------------------------ masks finished off the model's thread

#: Where :func:`~.pipeline.ground_and_segment` leaves a deferred image's :class:`PendingMasks`.
PENDING_MASKS = "pending_masks"


@dataclass
class PendingMasks:
    """SAM 2's logits for one image's detections, still on the model's device, turned into masks later.

    The model's thread hands these on instead of waiting for the upsampling and
    the device-to-host copy, so it can start the accelerator on the next batch;
    an encode worker calls :func:`finish_masks`.
    """

    logits: torch.Tensor  # (N, h, w)
    height: int
    width: int

    def compact(self) -> sv.CompactMask:
        return compact_masks(self.logits, self.height, self.width)


def finish_masks(detections: sv.Detections) -> sv.Detections:
    """Give ``detections`` their masks if they were deferred (``ground_and_segment(..., defer_masks=True)``).

    Call it before reading or filtering the detections (the pending logits are
    not filtered with them). Detections without pending masks are returned as
    they are.
    """
    pending = detections.metadata.pop(PENDING_MASKS, None)
    if pending is not None:
        if len(pending.logits) != len(detections):
            raise ValueError(f"{len(pending.logits)} pending masks for {len(detections)} detections")
        detections.mask = pending.compact()
    return detections


# ------------------------------------------------------------------ reading masks without full frames


def mask_crop(masks: MaskStack, index: int) -> tuple[np.ndarray, int, int]:
    """Mask ``index`` as ``(crop, x0, y0)``: the CompactMask's stored crop, or a dense mask's full frame at (0, 0)."""
    if isinstance(masks, sv.CompactMask):
        x0, y0 = (int(v) for v in masks.offsets[index])
        return masks.crop(index), x0, y0
    return np.asarray(masks[index], dtype=bool), 0, 0


def box_crop(masks: MaskStack, index: int, left: int, top: int, right: int, bottom: int) -> np.ndarray:
    """``masks[index][top:bottom, left:right]`` (an in-image box), read from the crop alone."""
    crop, x0, y0 = mask_crop(masks, index)
    out = np.zeros((max(bottom - top, 0), max(right - left, 0)), dtype=bool)
    # The overlap of the box and the crop, in image coordinates.
    oy0, oy1 = max(top, y0), min(bottom, y0 + crop.shape[0])
    ox0, ox1 = max(left, x0), min(right, x0 + crop.shape[1])
    if oy0 < oy1 and ox0 < ox1:
        out[oy0 - top : oy1 - top, ox0 - left : ox1 - left] = crop[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0]
    return out


def coco_rle(masks: MaskStack, index: int) -> dict[str, Any]:
    """COCO RLE of full-frame mask ``index``: ``{"size": [h, w], "counts": str}``, as if the frame were encoded.

    For a CompactMask only the full-height strip of columns the crop spans is
    built: COCO runs go down the columns, so the columns left and right of it
    are whole runs of zeros added to the first and last counts.
    """
    if not isinstance(masks, sv.CompactMask):
        return mask_to_rle(masks[index])
    height, width = masks.image_shape
    crop, x0, y0 = mask_crop(masks, index)
    strip = np.zeros((height, crop.shape[1]), dtype=bool)
    strip[y0 : y0 + crop.shape[0]] = crop
    counts = list(sv.mask_to_rle(strip))
    counts[0] += x0 * height
    after = (width - x0 - crop.shape[1]) * height
    if after:
        if len(counts) % 2:  # the strip ends in a run of zeros: extend it
            counts[-1] += after
        else:
            counts.append(after)
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": [int(c) for c in counts]}, height, width)
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode a 2-D boolean mask as COCO RLE: ``{"size": [h, w], "counts": str}``."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}
