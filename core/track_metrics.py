"""Tracking quality: HOTA, DetA, AssA, MOTA, IDF1 and ID switches between ground truth and predicted tracks.

The figures come from the ``trackeval`` package (the MOT Challenge's and KITTI's
official code): its ``HOTA``, ``CLEAR`` and ``Identity`` metric classes run on
data prepared here the way its MOT Challenge (boxes) and MOTS Challenge (masks)
datasets prepare theirs, and its own text reader loads MOT / MOTS files. Nothing
in here re-implements a metric.

A sequence is a list of frames; a frame is a list of :class:`TrackedObject`.
``gt`` and ``pred`` map a sequence (video) name to its sequence::

    from gsam2.core.track_metrics import TrackedObject, evaluate_tracks, read_mot

    gt = {"cars": [[TrackedObject(1, box=(10, 10, 20, 20))], [TrackedObject(1, box=(12, 10, 20, 20))]]}
    pred = {"cars": [[TrackedObject(7, box=(10, 10, 20, 20))], [TrackedObject(7, box=(12, 10, 20, 20))]]}
    evaluate_tracks(gt, pred)["HOTA"]  # 1.0: ids only need to be consistent, not equal
    evaluate_tracks(read_mot("gt_folder", ground_truth=True), read_mot("pred_folder"))

Scores are fractions (HOTA 1.0 is perfect); ``IDSW`` and the counts are integers.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .errors import InputError

KINDS = ("boxes", "masks")

# MOTS Challenge ground truth marks ignore regions with class 10 (trackeval/datasets/mots_challenge.py,
# ``crowd_ignore_filter = {2: ['10']}``); MOT Challenge ground truth marks rows not to evaluate with a
# 0 in its 7th column (mot_challenge_2d_box.py, ``zero_marked``).
MOTS_IGNORE_CLASS = 10

# What evaluate_tracks returns, in the order a table shows them.
SUMMARY_FIELDS = ("HOTA", "DetA", "AssA", "LocA", "MOTA", "MOTP", "IDF1", "IDSW")


@dataclass(frozen=True)
class TrackedObject:
    """One object on one frame: its track id and its box and/or mask.

    ``box`` is pixel ``(x, y, width, height)`` (MOT's layout); ``mask`` a COCO
    RLE ``{"size": [height, width], "counts": str | bytes}``. Box evaluation
    needs ``box``, mask evaluation ``mask``. ``class_id`` only matters with
    ``evaluate_tracks(..., by_class=True)``.
    """

    track_id: int
    box: tuple[float, float, float, float] | None = None
    mask: dict | None = None
    class_id: int = 1
    score: float = 1.0


Frames = list[list[TrackedObject]]  # frames[t] = the objects on frame t + 1 (MOT frames are 1-based)


def objects_from_masks(
    masks: np.ndarray,
    track_ids: Sequence[int],
    class_ids: Sequence[int] | None = None,
    scores: Sequence[float] | None = None,
) -> list[TrackedObject]:
    """One frame's ``(N, H, W)`` bool masks as objects with both an RLE mask and its bounding box."""
    objects = []
    for i, track_id in enumerate(track_ids):
        rle = mask_utils.encode(np.asfortranarray(np.asarray(masks[i], dtype=np.uint8)))
        box = tuple(float(v) for v in mask_utils.toBbox(rle))
        objects.append(
            TrackedObject(
                int(track_id),
                box=box,
                mask=rle,
                class_id=1 if class_ids is None else int(class_ids[i]),
                score=1.0 if scores is None else float(scores[i]),
            )
        )
    return objects


# ---------------------------------------------------------------------------------------------- reading


def read_mot(path: str | Path, ground_truth: bool = False) -> dict[str, Frames]:
    """Read MOT Challenge box tracks: ``frame,id,x,y,w,h,conf,...`` rows, frames 1-based.

    ``path`` is one ``.txt`` file (the sequence is its stem), a folder of
    ``<sequence>.txt`` files (a tracker's output), or a MOT Challenge folder of
    ``<sequence>/gt/gt.txt`` (with ``seqinfo.ini``'s ``seqLength`` when present).
    With ``ground_truth=True`` rows whose 7th column is 0 are dropped, as
    MOT Challenge ground truth uses 0 for "do not evaluate".
    """
    sequences = {}
    for name, file, length in _sequence_files(Path(path)):
        rows = _read_rows(file, force_delimiters=None)
        frames: dict[int, list[TrackedObject]] = {}
        length = max([length or 0, *(frame for frame, _ in rows)])  # dropped rows' frames still count
        for frame, row in rows:
            if len(row) < 6:
                raise InputError(f"{file}: frame {frame} has {len(row)} columns; MOT rows are frame,id,x,y,w,h,conf")
            try:
                track_id = _integer(row[1])
                x, y, w, h = (float(v) for v in row[2:6])
                score = float(row[6]) if len(row) > 6 and row[6] != "" else 1.0
            except ValueError as error:
                raise InputError(f"{file}: frame {frame}: {error}") from None
            if ground_truth and score == 0:
                continue
            frames.setdefault(frame, []).append(TrackedObject(track_id, box=(x, y, w, h), score=score))
        sequences[name] = _as_frames(frames, length)
    return sequences


def read_mots(path: str | Path, ground_truth: bool = False) -> dict[str, Frames]:
    """Read MOTS Challenge mask tracks: ``frame id class_id height width rle`` rows (space separated, 1-based frames).

    ``path`` is laid out as for :func:`read_mot`. With ``ground_truth=True`` the
    rows of class 10 (MOTS's ignore regions) are dropped; predictions falling in
    them are then counted as false positives (trackeval would drop them).
    """
    sequences = {}
    for name, file, length in _sequence_files(Path(path)):
        rows = _read_rows(file, force_delimiters=" ")
        frames: dict[int, list[TrackedObject]] = {}
        length = max([length or 0, *(frame for frame, _ in rows)])  # dropped rows' frames still count
        for frame, row in rows:
            if len(row) < 6:
                raise InputError(f"{file}: frame {frame} has {len(row)} columns; MOTS rows are frame id class height width rle")
            try:
                track_id, class_id, height, width = (_integer(v) for v in row[1:5])
            except ValueError as error:
                raise InputError(f"{file}: frame {frame}: {error}") from None
            if ground_truth and class_id == MOTS_IGNORE_CLASS:
                continue
            rle = {"size": [height, width], "counts": row[5].encode("ascii")}
            try:
                box = tuple(float(v) for v in mask_utils.toBbox(rle))
            except Exception as error:  # pycocotools raises bare Exceptions/ValueErrors on bad RLE strings
                raise InputError(f"{file}: frame {frame}: not a COCO RLE mask ({error})") from None
            frames.setdefault(frame, []).append(TrackedObject(track_id, box=box, mask=rle, class_id=class_id))
        sequences[name] = _as_frames(frames, length)
    return sequences


def _sequence_files(path: Path) -> list[tuple[str, Path, int | None]]:
    """``(sequence name, text file, length from seqinfo.ini or None)`` for each sequence under ``path``."""
    if path.is_file():
        return [(path.stem, path, None)]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    challenge = sorted(path.glob("*/gt/gt.txt"))
    if challenge:
        return [(file.parent.parent.name, file, _seqinfo_length(file.parent.parent)) for file in challenge]
    files = sorted(file for file in path.glob("*.txt") if file.is_file())
    if not files:
        raise InputError(f"{path}: no <sequence>.txt files and no <sequence>/gt/gt.txt in this folder")
    return [(file.stem, file, None) for file in files]


def _seqinfo_length(folder: Path) -> int | None:
    info = folder / "seqinfo.ini"
    if not info.is_file():
        return None
    parser = configparser.ConfigParser()
    parser.read(info)
    value = parser.get("Sequence", "seqLength", fallback=None)
    return int(value) if value is not None and value.strip().isdigit() else None


def _read_rows(file: Path, force_delimiters: str | None) -> list[tuple[int, list[str]]]:
    """``(frame, columns)`` for every row of ``file``, read by trackeval's own text reader."""
    from trackeval.datasets._base_dataset import _BaseDataset
    from trackeval.utils import TrackEvalException

    # The reader prints a traceback before raising; keep the terminal clean and raise one line instead.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            read, _ = _BaseDataset._load_simple_text_file(str(file), force_delimiters=force_delimiters)
        except TrackEvalException as error:
            cause = error.__context__ if isinstance(error.__context__, TrackEvalException) else error
            detail = " ".join(str(cause).split())
            raise InputError(f"{file}: cannot be read ({detail})") from None
    rows = []
    for timestep, timestep_rows in read.items():
        frame = int(timestep)
        if frame < 1:
            raise InputError(f"{file}: frame {frame}: frames are numbered from 1")
        rows.extend((frame, row) for row in timestep_rows)
    return rows


def _integer(text: str) -> int:
    value = float(text)
    if not value.is_integer():
        raise ValueError(f"{text!r} is not a whole number")
    return int(value)


def _as_frames(by_frame: dict[int, list[TrackedObject]], length: int | None) -> Frames:
    count = max([length or 0, *by_frame])
    return [by_frame.get(t + 1, []) for t in range(count)]


# ---------------------------------------------------------------------------------------------- scoring


def evaluate_tracks(
    gt: Mapping[str, Frames],
    pred: Mapping[str, Frames],
    kind: str = "boxes",
    by_class: bool = False,
) -> dict[str, Any]:
    """Score predicted tracks against ground truth with trackeval's HOTA, CLEAR and Identity metrics.

    ``kind`` is ``"boxes"`` (box IoU, MOT Challenge) or ``"masks"`` (mask IoU,
    MOTS Challenge). Objects are matched whatever their class unless
    ``by_class``, which scores each class alone and combines them as
    trackeval's "COMBINED" class does (averaged over detections).

    Returns ``{"HOTA", "DetA", "AssA", "LocA", "MOTA", "MOTP", "IDF1", "IDSW",
    "IDTP", "IDFP", "IDFN", "gt_objects", "pred_objects",
    "sequences": {name: {...the same, one sequence}}}`` plus
    ``"classes": {class_id: {...}}`` with ``by_class``. HOTA, DetA, AssA and
    LocA are averaged over trackeval's 19 localisation thresholds (0.05 .. 0.95),
    as its summaries are; MOTA, IDF1 and IDSW use its default IoU threshold 0.5.
    """
    from trackeval.metrics import CLEAR, HOTA, Identity

    if kind not in KINDS:
        raise InputError(f"kind {kind!r}: choose one of {', '.join(KINDS)}")
    _check_same_sequences(gt, pred)
    metrics = [HOTA(), CLEAR({"PRINT_CONFIG": False}), Identity({"PRINT_CONFIG": False})]
    classes = sorted({o.class_id for frames in (*gt.values(), *pred.values()) for f in frames for o in f})
    groups = classes if by_class else [None]

    # per_class[c][seq] = {metric name: trackeval's result dict}
    per_class: dict[Any, dict[str, dict[str, dict]]] = {}
    for class_id in groups:
        per_class[class_id] = {}
        for name in gt:
            data = _prepare_sequence(name, gt[name], pred[name], kind, class_id)
            per_class[class_id][name] = {m.get_name(): m.eval_sequence(data) for m in metrics}

    # Sequences combine by trackeval's combine_sequences, classes by its combine_classes_det_averaged.
    sequences: dict[str, dict[str, dict]] = {}
    for name in gt:
        sequences[name] = _combine(metrics, {c: per_class[c][name] for c in groups}, over_classes=by_class)
    class_results = {
        c: {m.get_name(): m.combine_sequences({s: per_class[c][s][m.get_name()] for s in gt}) for m in metrics}
        for c in groups
    }
    overall = _combine(metrics, class_results, over_classes=by_class)

    result = _summary(overall)
    result["sequences"] = {name: _summary(res) for name, res in sequences.items()}
    if by_class:
        result["classes"] = {c: _summary(class_results[c]) for c in groups}
    return result


def _combine(metrics, results_by_group: dict[Any, dict[str, dict]], over_classes: bool) -> dict[str, dict]:
    if not over_classes:
        [only] = results_by_group.values()
        return only
    return {
        m.get_name(): m.combine_classes_det_averaged({g: r[m.get_name()] for g, r in results_by_group.items()})
        for m in metrics
    }


def _summary(res: dict[str, dict]) -> dict[str, Any]:
    hota, clear, identity = res["HOTA"], res["CLEAR"], res["Identity"]
    summary = {
        "HOTA": float(np.mean(hota["HOTA"])),
        "DetA": float(np.mean(hota["DetA"])),
        "AssA": float(np.mean(hota["AssA"])),
        "LocA": float(np.mean(hota["LocA"])),
        "MOTA": float(clear["MOTA"]),
        "MOTP": float(clear["MOTP"]),
        "IDF1": float(identity["IDF1"]),
        "IDSW": int(clear["IDSW"]),
        "IDTP": int(identity["IDTP"]),
        "IDFP": int(identity["IDFP"]),
        "IDFN": int(identity["IDFN"]),
        "gt_objects": int(clear["CLR_TP"] + clear["CLR_FN"]),
        "pred_objects": int(clear["CLR_TP"] + clear["CLR_FP"]),
    }
    for key, value in summary.items():
        if isinstance(value, float) and math.isnan(value):
            summary[key] = 0.0
    return summary


def _check_same_sequences(gt: Mapping[str, Frames], pred: Mapping[str, Frames]) -> None:
    if not gt:
        raise InputError("ground truth has no sequences")
    missing = [name for name in gt if name not in pred]
    extra = [name for name in pred if name not in gt]
    if missing:
        raise InputError(f"predictions have no sequence {', '.join(map(repr, missing))} that the ground truth has")
    if extra:
        raise InputError(f"predictions have sequence {', '.join(map(repr, extra))} that the ground truth does not")


def _prepare_sequence(name: str, gt: Frames, pred: Frames, kind: str, class_id: int | None) -> dict[str, Any]:
    """One sequence in the layout trackeval's metrics read (``eval_sequence(data)``).

    The same fields and steps as ``MotChallenge2DBox.get_preprocessed_seq_data`` /
    ``MOTSChallenge.get_preprocessed_seq_data`` (trackeval/datasets/): per frame the
    ids and the gt x prediction similarity (box IoU from ``_calculate_box_ious``,
    mask IoU from ``_calculate_mask_ious``), then ids relabelled to 0..n-1. Their
    distractor-class and ignore-region removal has no counterpart here.
    """
    from trackeval.datasets._base_dataset import _BaseDataset

    steps = max(len(gt), len(pred))
    data: dict[str, Any] = {key: [] for key in ("gt_ids", "tracker_ids", "tracker_confidences", "similarity_scores")}
    for t in range(steps):
        gt_objects = [o for o in (gt[t] if t < len(gt) else []) if class_id is None or o.class_id == class_id]
        pred_objects = [o for o in (pred[t] if t < len(pred) else []) if class_id is None or o.class_id == class_id]
        for side, objects in (("ground truth", gt_objects), ("predictions", pred_objects)):
            ids = [o.track_id for o in objects]
            if len(set(ids)) != len(ids):
                repeated = sorted({i for i in ids if ids.count(i) > 1})
                raise InputError(f"{side}, sequence {name!r}, frame {t + 1}: track id {repeated[0]} appears twice")
        data["gt_ids"].append(np.array([o.track_id for o in gt_objects], dtype=int))
        data["tracker_ids"].append(np.array([o.track_id for o in pred_objects], dtype=int))
        data["tracker_confidences"].append(np.array([o.score for o in pred_objects], dtype=float))
        if not gt_objects or not pred_objects:
            similarity = np.zeros((len(gt_objects), len(pred_objects)))
        elif kind == "boxes":
            similarity = _BaseDataset._calculate_box_ious(
                _boxes(gt_objects, name, t, "ground truth"), _boxes(pred_objects, name, t, "predictions"), "xywh"
            )
        else:
            similarity = _BaseDataset._calculate_mask_ious(
                _masks(gt_objects, name, t, "ground truth"), _masks(pred_objects, name, t, "predictions"),
                is_encoded=True,
            )
        data["similarity_scores"].append(np.asarray(similarity, dtype=float))

    # Relabel ids to 0..n-1 in order of value, as get_preprocessed_seq_data does.
    for ids_key, count_key, dets_key in (
        ("gt_ids", "num_gt_ids", "num_gt_dets"),
        ("tracker_ids", "num_tracker_ids", "num_tracker_dets"),
    ):
        unique = np.unique(np.concatenate(data[ids_key])) if data[ids_key] else np.zeros(0, int)
        data[ids_key] = [np.searchsorted(unique, ids).astype(int) for ids in data[ids_key]]
        data[count_key] = len(unique)
        data[dets_key] = int(sum(len(ids) for ids in data[ids_key]))
    data["num_timesteps"] = steps
    data["seq"] = name
    return data


def _boxes(objects: list[TrackedObject], name: str, t: int, side: str) -> np.ndarray:
    if any(o.box is None for o in objects):
        raise InputError(f"{side}, sequence {name!r}, frame {t + 1}: an object has no box to score boxes with")
    return np.array([o.box for o in objects], dtype=float)


def _masks(objects: list[TrackedObject], name: str, t: int, side: str) -> list[dict]:
    if any(o.mask is None for o in objects):
        raise InputError(f"{side}, sequence {name!r}, frame {t + 1}: an object has no mask to score masks with")
    masks = []
    for o in objects:
        counts = o.mask["counts"]
        masks.append({"size": list(o.mask["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts})
    return masks
