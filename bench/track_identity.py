"""Identity benchmark: our continuous-id rule against the reference's, on synthetic scenes with known tracks.

What runs:

* **ours**: :func:`gsam2.core.video_pipeline.ground_and_track` (``GroundedTracker``),
  the code ``gsam2 video`` runs, with its defaults. Only the three models are replaced, by stand-ins with the interfaces
  the real ones have (``Detector.detect``, ``Sam2ImageSegmenter.embed`` /
  ``segment_boxes``, ``Sam2VideoTracker.start`` -> ``TrackingSession.prompt`` /
  ``step`` / ``remove``).
* **reference**: a port of IDEA-Research/Grounded-SAM-2
  ``grounded_sam2_tracking_demo_with_continuous_id.py`` with
  ``utils/mask_dictionary_model.py`` (commit 2c0178f, see :func:`reference_track`),
  driven by the same stand-ins.

The stand-ins answer from the ground truth with faults drawn from seeded random
numbers keyed by (frame, object), so both rules see the same detections on the
same keyframes and the same tracker behaviour for the same object over the same
frames. Detector faults: misses (more for partly hidden objects), false
positives, box jitter (SAM 2's mask then stays inside the jittered box), label
confusion. Tracker faults: mask drift, losing an object that disappears (behind
an occluder or out of frame) instead of picking it up again, swapping two
objects' masks after they overlapped.

Scores come from :func:`gsam2.core.track_metrics.evaluate_tracks` (trackeval's
HOTA, CLEAR, Identity) on masks, class-aware (a track with the wrong label is
wrong).

    python bench/track_identity.py                   # full sweep, a table per scene
    python bench/track_identity.py --json            # ... and one JSON object as the last line
    python bench/track_identity.py --scenes occlusion --levels high --steps 10 20
    python bench/track_identity.py --iou-thresholds 0.2 0.3 0.5 0.8 --markdown   # bench/README.md's tables
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import supervision as sv

from gsam2.core.spec import DEFAULT_IOU_THRESHOLD
from gsam2.core.track_metrics import Frames, evaluate_tracks, objects_from_masks
from gsam2.core.tracker import TrackedFrame
from gsam2.core.video_pipeline import ground_and_track

HEIGHT, WIDTH = 96, 128
PHRASES = ["person", "car", "dog"]
# An object is in the ground truth on a frame when this much of it shows (MOT-style visibility).
MIN_VISIBLE_FRACTION = 0.2
MIN_VISIBLE_PIXELS = 12
# The stand-in tracker takes an object for hidden (a possible loss) below this visible fraction.
HIDDEN_FRACTION = 0.3

# ------------------------------------------------------------------------------------------------ scenes


@dataclass
class SceneObject:
    """An ellipse moving along waypoints ``(frame, x, y)`` (linear in between; absent outside them)."""

    class_name: str
    radii: tuple[float, float]  # (rx, ry) pixels
    waypoints: list[tuple[int, float, float]]
    depth: float  # smaller is nearer the camera: it hides what is behind it

    def centre(self, t: int) -> tuple[float, float] | None:
        frames = [w[0] for w in self.waypoints]
        if t < frames[0] or t > frames[-1]:
            return None
        x = float(np.interp(t, frames, [w[1] for w in self.waypoints]))
        y = float(np.interp(t, frames, [w[2] for w in self.waypoints]))
        return x, y


@dataclass
class Scene:
    name: str
    frames: int
    objects: list[SceneObject]
    occluders: list[tuple[int, int, int, int]] = field(default_factory=list)  # static x1, y1, x2, y2, in front

    def render(self) -> GroundTruth:
        ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
        front_of_all = np.zeros((HEIGHT, WIDTH), bool)
        for x1, y1, x2, y2 in self.occluders:
            front_of_all[y1:y2, x1:x2] = True
        order = sorted(range(len(self.objects)), key=lambda i: self.objects[i].depth)
        visible = np.zeros((self.frames, len(self.objects), HEIGHT, WIDTH), bool)
        full = np.zeros((self.frames, len(self.objects), HEIGHT, WIDTH), bool)  # unoccluded (inside the frame)
        fraction = np.zeros((self.frames, len(self.objects)))
        for t in range(self.frames):
            covered = front_of_all.copy()
            for i in order:  # nearest first
                obj = self.objects[i]
                centre = obj.centre(t)
                if centre is None:
                    continue
                (cx, cy), (rx, ry) = centre, obj.radii
                shape = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
                full[t, i] = shape
                visible[t, i] = shape & ~covered
                covered |= shape
                fraction[t, i] = visible[t, i].sum() / (np.pi * rx * ry)
        present = (fraction >= MIN_VISIBLE_FRACTION) & (visible.sum(axis=(2, 3)) >= MIN_VISIBLE_PIXELS)
        visible[~present] = False
        classes = [PHRASES.index(o.class_name) for o in self.objects]
        return GroundTruth(self, visible, full, fraction, present, classes)


@dataclass
class GroundTruth:
    scene: Scene
    visible: np.ndarray  # (T, N, H, W) bool: what shows of each object (empty when not present)
    full: np.ndarray  # (T, N, H, W) bool: the whole object inside the frame, occluded or not
    fraction: np.ndarray  # (T, N): visible share of the whole object
    present: np.ndarray  # (T, N) bool: counted in the ground truth
    classes: list[int]  # class index in PHRASES per object

    def tracks(self) -> Frames:
        """The ground truth as track_metrics frames: object i has track id i + 1."""
        frames = []
        for t in range(self.scene.frames):
            here = np.flatnonzero(self.present[t])
            frames.append(objects_from_masks(self.visible[t, here], here + 1, [self.classes[i] for i in here]))
        return frames


def _scenes() -> dict[str, Scene]:
    crowd_rng = np.random.default_rng(7)
    crowd = []
    for _ in range(10):
        x, y = crowd_rng.uniform(12, WIDTH - 12), crowd_rng.uniform(12, HEIGHT - 12)
        vx, vy = crowd_rng.uniform(-1.2, 1.2, size=2)
        points = []
        for t in range(0, 100, 5):  # bounce off the borders, sampled every 5 frames
            points.append((t, x, y))
            x, y = x + 5 * vx, y + 5 * vy
            if not 10 < x < WIDTH - 10:
                vx, x = -vx, min(max(x, 10), WIDTH - 10)
            if not 10 < y < HEIGHT - 10:
                vy, y = -vy, min(max(y, 10), HEIGHT - 10)
        points.append((99, x, y))
        crowd.append(SceneObject("person", (6, 9), points, depth=float(crowd_rng.uniform())))
    return {
        # Two pairs pass each other (the nearer hides the farther), a third crosses both rows.
        "crossing": Scene("crossing", 100, [
            SceneObject("person", (6, 10), [(0, 10, 38), (99, 118, 38)], depth=1),
            SceneObject("person", (6, 10), [(0, 118, 42), (99, 10, 42)], depth=2),
            SceneObject("car", (14, 8), [(0, 20, 76), (99, 110, 76)], depth=0),
            SceneObject("car", (14, 8), [(0, 110, 70), (99, 20, 70)], depth=3),
            SceneObject("person", (6, 10), [(0, 64, 8), (99, 70, 88)], depth=1.5),
        ]),
        # A pillar in front of everything; two objects pass behind it, one waits behind it for 30 frames.
        "occlusion": Scene("occlusion", 100, [
            SceneObject("car", (9, 6), [(0, 5, 30), (99, 123, 30)], depth=1),
            SceneObject("person", (6, 10), [(0, 123, 58), (99, 5, 58)], depth=1),
            SceneObject("person", (6, 9), [(0, 10, 82), (40, 66, 82), (70, 66, 82), (99, 120, 82)], depth=1),
        ], occluders=[(52, 0, 80, HEIGHT)]),
        # Objects leave the frame and come back: after 10, about 30 and about 60 frames; one stays.
        "reentry": Scene("reentry", 100, [
            SceneObject("dog", (8, 6), [(0, 60, 30), (25, 145, 30), (45, 145, 34), (70, 80, 34), (99, 90, 40)], 1),
            SceneObject("person", (6, 10), [(0, 30, 60), (15, -15, 60), (25, -15, 62), (40, 30, 62), (99, 60, 66)], 1),
            SceneObject("person", (6, 10), [(0, 100, 70), (10, 100, 112), (75, 100, 112), (90, 104, 70),
                                            (99, 104, 66)], 1),
            SceneObject("car", (12, 7), [(0, 20, 86), (99, 60, 86)], 2),
        ]),
        # Ten look-alikes bouncing around a small frame, often overlapping.
        "crowd": Scene("crowd", 100, crowd),
    }


SCENES = _scenes()

# ------------------------------------------------------------------------------------------------ faults


@dataclass(frozen=True)
class Faults:
    miss: float  # a visible object is not detected
    miss_hidden: float  # ... extra, when less than half of it shows
    false_positives: float  # mean false boxes per keyframe
    jitter: float  # box corner noise, as a fraction of the box's size (std)
    confusion: float  # a detection gets another phrase's label
    drift: float  # std (pixels per frame) of the tracker's mask drift, a mean-reverting walk
    lose: float  # the tracker does not pick an object up again after it disappeared
    swap: float  # two tracked objects' masks swap when they separate after overlapping


FAULT_LEVELS = {
    "none": Faults(0, 0, 0, 0, 0, 0, 0, 0),
    "low": Faults(0.05, 0.3, 0.1, 0.03, 0.02, 0.2, 0.1, 0.1),
    "medium": Faults(0.1, 0.5, 0.3, 0.06, 0.05, 0.4, 0.25, 0.25),
    "high": Faults(0.2, 0.7, 0.6, 0.1, 0.1, 0.8, 0.5, 0.5),
}
DRIFT_MEMORY = 0.9  # drift offset_t = 0.9 * offset_{t-1} + noise: it wanders and comes back


class SceneFrame(np.ndarray):
    """An RGB frame that knows its index in the scene, so that the stand-ins can look up the truth."""

    index: int


def scene_frames(truth: GroundTruth) -> list[SceneFrame]:
    colours = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60], [200, 60, 200],
                        [60, 200, 200], [230, 140, 40], [140, 40, 230], [40, 230, 140], [150, 150, 150]], np.uint8)
    frames = []
    for t in range(truth.scene.frames):
        image = np.full((HEIGHT, WIDTH, 3), 30, np.uint8)
        for i in range(truth.visible.shape[1]):
            image[truth.visible[t, i]] = colours[i % len(colours)]
        for x1, y1, x2, y2 in truth.scene.occluders:
            image[y1:y2, x1:x2] = 90
        frame = image.view(SceneFrame)
        frame.index = t
        frames.append(frame)
    return frames


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def masks_iou(mask: np.ndarray, masks: np.ndarray) -> np.ndarray:
    inter = (masks & mask).sum(axis=(1, 2))
    union = (masks | mask).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


class StandInDetector:
    """Grounding DINO stand-in: the visible objects' boxes, with misses, false boxes, jitter and wrong labels."""

    name = "stand-in"
    requires_prompt = True
    produces_masks = False

    def __init__(self, truth: GroundTruth, faults: Faults, seed: int):
        self.truth, self.faults, self.seed = truth, faults, seed

    def validate_phrases(self, phrases: Sequence[str]) -> None:
        pass

    def detect(self, images, phrases, box_threshold, text_threshold) -> list[sv.Detections]:
        return [self._detect_one(image.index, list(phrases)) for image in images]

    def _detect_one(self, t: int, phrases: list[str]) -> sv.Detections:
        truth, f = self.truth, self.faults
        rng = _rng(self.seed, 1, t)  # keyed by the frame: every rule gets the same detections there
        boxes, labels, scores = [], [], []
        for i in np.flatnonzero(truth.present[t]):
            miss = f.miss + (f.miss_hidden if truth.fraction[t, i] < 0.5 else 0.0)
            draws = rng.uniform(size=3)
            if draws[0] < miss:
                continue
            box = sv.mask_to_xyxy(truth.visible[t, i][None])[0].astype(float)
            size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
            box = box + rng.normal(0, 1, 4) * f.jitter * size
            label = truth.classes[i]
            if draws[1] < f.confusion:
                label = (label + 1 + int(draws[2] * (len(phrases) - 1))) % len(phrases)
            boxes.append(box)
            labels.append(label)
            scores.append(rng.uniform(0.45, 0.95))
        for _ in range(rng.poisson(f.false_positives)):
            w, h = rng.uniform(8, 24, size=2)
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
            boxes.append(np.array([x, y, x + w, y + h]))
            labels.append(int(rng.integers(len(phrases))))
            scores.append(rng.uniform(0.35, 0.6))
        if not boxes:
            return sv.Detections.empty()
        xyxy = np.clip(np.array(boxes), 0, [WIDTH - 1, HEIGHT - 1, WIDTH - 1, HEIGHT - 1]).astype(np.float32)
        labels = np.array(labels, dtype=int)
        return sv.Detections(
            xyxy=xyxy,
            confidence=np.array(scores, dtype=np.float32),
            class_id=labels,
            data={"class_name": np.array([phrases[k] for k in labels], dtype=str)},
        )


class StandInSegmenter:
    """SAM 2 image stand-in: a box on an object gives what shows of that object inside the box (grown 15%);
    a box on nothing gives an ellipse filling it."""

    def __init__(self, truth: GroundTruth):
        self.truth = truth

    def embed(self, images) -> list[int]:
        return [image.index for image in images]

    def segment_boxes(self, t: int, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        truth = self.truth
        here = np.flatnonzero(truth.present[t])
        truth_boxes = sv.mask_to_xyxy(truth.visible[t, here]).astype(float) if len(here) else np.zeros((0, 4))
        ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
        masks = np.zeros((len(boxes), HEIGHT, WIDTH), bool)
        for k, box in enumerate(np.asarray(boxes, dtype=float)):
            overlaps = box_iou(box, truth_boxes) if len(here) else np.zeros(0)
            w, h = box[2] - box[0], box[3] - box[1]
            if len(overlaps) and overlaps.max() >= 0.3:
                grown = (xs >= box[0] - 0.15 * w) & (xs <= box[2] + 0.15 * w)
                grown &= (ys >= box[1] - 0.15 * h) & (ys <= box[3] + 0.15 * h)
                masks[k] = truth.visible[t, here[int(np.argmax(overlaps))]] & grown
            else:
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                masks[k] = ((xs - cx) / max(w / 2, 1)) ** 2 + ((ys - cy) / max(h / 2, 1)) ** 2 <= 1
        return masks, np.ones(len(boxes), np.float32)


class StandInVideoTracker:
    """SAM 2 video stand-in: each prompted object follows the ground-truth object its prompt covers."""

    name = "stand-in"

    def __init__(self, truth: GroundTruth, faults: Faults, seed: int):
        self.truth, self.faults, self.seed = truth, faults, seed
        self.sessions_started = 0
        steps = truth.scene.frames
        n = truth.visible.shape[1]
        # All randomness up front, keyed by (object, frame), so that any session following an object
        # over the same frames sees the same faults, whichever rule prompted it.
        self.drift_noise = np.stack([_rng(seed, 2, i).normal(0, 1, (steps, 2)) for i in range(n)]) * faults.drift
        self.lose_draw = np.stack([_rng(seed, 3, i).uniform(size=steps) for i in range(n)])
        hidden = truth.fraction < HIDDEN_FRACTION
        self.hides_at = hidden & ~np.vstack([np.zeros((1, n), bool), hidden[:-1]])  # (T, N): starts hiding here
        overlap = np.einsum("tihw,tjhw->tij", truth.full.astype(np.float32), truth.full.astype(np.float32)) > 0
        self.separates_at = ~overlap & np.concatenate([np.zeros((1, n, n), bool), overlap[:-1]])  # (T, N, N)
        self.swap_draw = _rng(seed, 4).uniform(size=(steps, n, n))

    def start(self, keep_pixel_frames: int | None = None) -> StandInSession:
        self.sessions_started += 1
        return StandInSession(self)


@dataclass
class _Followed:
    target: int | None  # ground-truth object index; None: a false detection (a patch of background)
    prompt_frame: int
    prompt_mask: np.ndarray
    offset: np.ndarray = field(default_factory=lambda: np.zeros(2))
    lost: bool = False
    phantom_life: int = 0


class StandInSession:
    """One video's tracking memory with ``TrackingSession``'s interface (prompt, step, remove, object_ids)."""

    def __init__(self, tracker: StandInVideoTracker):
        self.tracker = tracker
        self.objects: dict[int, _Followed] = {}
        self.pending: dict[int, tuple[list[int], dict]] = {}
        self.frame_index: int | None = None

    @property
    def object_ids(self) -> list[int]:
        return list(self.objects)

    def prompt(self, frame_index, object_ids, boxes=None, masks=None, points=None) -> None:
        if frame_index in self.pending:
            raise ValueError("prompt all new objects of a frame in one call")
        self.pending[frame_index] = (list(object_ids), {"boxes": boxes, "masks": masks, "points": points})

    def remove(self, object_ids) -> None:
        for object_id in object_ids:
            self.objects.pop(object_id, None)

    def step(self, frame_index: int, frame=None) -> TrackedFrame:
        truth = self.tracker.truth
        if frame_index != self.frame_index:
            self._advance(frame_index)
        if frame_index in self.pending:
            ids, inputs = self.pending.pop(frame_index)
            for k, object_id in enumerate(ids):
                self.objects[object_id] = self._follow(frame_index, k, inputs)
        ids = list(self.objects)
        masks = np.zeros((len(ids), HEIGHT, WIDTH), bool)
        for k, object_id in enumerate(ids):
            followed = self.objects[object_id]
            if frame_index == followed.prompt_frame:
                masks[k] = followed.prompt_mask  # on its prompt frame SAM 2 returns (about) the prompt
            elif followed.target is None:
                masks[k] = followed.prompt_mask if frame_index - followed.prompt_frame < followed.phantom_life else 0
            elif not followed.lost:
                dx, dy = np.round(followed.offset).astype(int)
                masks[k] = shift(truth.visible[frame_index, followed.target], dx, dy)
        scores = np.where(masks.any(axis=(1, 2)), 1.0, -1.0).astype(np.float32)
        return TrackedFrame(frame_index, ids, masks, scores)

    def _follow(self, t: int, k: int, inputs: dict) -> _Followed:
        truth = self.tracker.truth
        here = np.flatnonzero(truth.present[t])
        if inputs["masks"] is not None:
            mask = np.asarray(inputs["masks"][k], bool)
            overlaps = masks_iou(mask, truth.visible[t, here]) if len(here) else np.zeros(0)
        elif inputs["boxes"] is not None:
            box = np.asarray(inputs["boxes"][k], float)
            overlaps = box_iou(box, sv.mask_to_xyxy(truth.visible[t, here]).astype(float)) if len(here) else np.zeros(0)
            mask = np.zeros((HEIGHT, WIDTH), bool)
            mask[int(box[1]) : int(box[3]) + 1, int(box[0]) : int(box[2]) + 1] = True
        else:
            xs, ys = np.asarray(inputs["points"][k]).astype(int).T
            overlaps = truth.visible[t, here][:, ys, xs].mean(axis=1) if len(here) else np.zeros(0)
            mask = np.zeros((HEIGHT, WIDTH), bool)
            mask[ys, xs] = True
        if len(overlaps) and overlaps.max() >= 0.3:
            target = int(here[int(np.argmax(overlaps))])
            if inputs["masks"] is None:
                mask = truth.visible[t, target]
            return _Followed(target, t, mask)
        life = int(_rng(self.tracker.seed, 5, t, int(mask.sum())).integers(2, 13))
        return _Followed(None, t, mask, phantom_life=life)

    def _advance(self, frame_index: int) -> None:
        """Apply the faults of the frames from the last one stepped up to ``frame_index``."""
        tracker = self.tracker
        start = frame_index if self.frame_index is None else self.frame_index + 1
        for t in range(start, frame_index + 1):
            followed = [f for f in self.objects.values() if f.target is not None and f.prompt_frame < t]
            for f in followed:
                f.offset = DRIFT_MEMORY * f.offset + tracker.drift_noise[f.target, t]
                if tracker.hides_at[t, f.target] and tracker.lose_draw[f.target, t] < tracker.faults.lose:
                    f.lost = True
            # Two tracked objects that overlapped and now separate may come out with each other's masks.
            active = {f.target: f for f in followed if not f.lost}
            for i in list(active):
                for j in list(active):
                    if i < j and tracker.separates_at[t, i, j] and tracker.swap_draw[t, i, j] < tracker.faults.swap:
                        active[i].target, active[j].target = j, i
        self.frame_index = frame_index


def shift(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``mask`` moved by whole pixels, what leaves the frame dropped."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    if abs(dx) < w and abs(dy) < h:
        out[yd, xd] = mask[ys, xs]
    return out


# ------------------------------------------------------------------------------------------------ rules


@dataclass
class Tracked:
    """One frame's output of a rule: ids, class indices, masks."""

    ids: list[int]
    classes: list[int]
    masks: np.ndarray


def ours_track(frames, detector, segmenter, tracker, step: int, iou_threshold: float, **options) -> list[Tracked]:
    """Our rule, as `gsam2 video` runs it: ground_and_track with the spec's defaults but for step and IoU."""
    out = []
    for result in ground_and_track(
        ((frame.index, frame) for frame in frames), PHRASES, detector, segmenter, tracker,
        step=step, iou_threshold=iou_threshold, **options,
    ):
        d = result.detections
        out.append(Tracked(d.tracker_id.tolist(), d.class_id.tolist(), d.mask))
    return out


def reference_track(frames, detector, segmenter, tracker, step: int, iou_threshold: float = 0.8) -> list[Tracked]:
    """A port of the reference's continuous-id loop (Grounded-SAM-2 @ 2c0178f).

    grounded_sam2_tracking_demo_with_continuous_id.py:
      L81   for start_frame_idx in range(0, len(frame_names), step)
      L95   detect on the keyframe (box_threshold=0.25, text_threshold=0.25)
      L112  SAM 2 image masks for the boxes (multimask_output=False)
      L132  mask_dict.add_new_frame_annotation: detections numbered 1..n
      L140  mask_dict.update_masks(tracking_annotation_dict=sam2_masks, iou_threshold=0.8)
      L142-144  no detection: mask_dict = sam2_masks (the last tracked frame's masks carry on)
      L147-150  nothing to track: empty frames start..start+step-1, continue
      L152-160  video_predictor.reset_state, add_new_mask for every object of mask_dict (only those)
      L163  propagate_in_video(max_frame_num_to_track=step, start_frame_idx=start): frames
            start..start+step (sam2_video_predictor.py L710-713), so the next keyframe is tracked too
            and then overwritten by the next segment (Step 5 saves per segment, later saves win)
      L167  mask = logits > 0; L177 sam2_masks = the last propagated frame (all objects, even empty)
      L185-187  the saved mask image: mask_img[obj.mask] = obj_id in dict order (later ids win overlaps)
    utils/mask_dictionary_model.py update_masks (L38-65):
      L44   a new mask with no pixels is skipped
      L47-55  it takes the id of the FIRST tracked object (dict order) with IoU > iou_threshold
      L57-62  otherwise objects_count += 1 and that is its id
      L63   updated_masks[flag] = ...: two new masks matching one id keep only the last
      L74-85  calculate_iou: intersection / union (NaN for two empty masks: never > threshold)
    """
    n = len(frames)
    sam2_masks: dict[int, tuple[np.ndarray, int]] = {}  # id -> (mask, class index): MaskDictionaryModel.labels
    objects_count = 0
    video_segments: dict[int, dict[int, tuple[np.ndarray, int]]] = {}
    for start in range(0, n, step):
        frame = frames[start]
        [found] = detector.detect([frame], PHRASES, 0.25, 0.25)
        if len(found):
            [embedding] = segmenter.embed([frame])
            masks, _ = segmenter.segment_boxes(embedding, found.xyxy)
            mask_dict = {i + 1: (masks[i], int(found.class_id[i])) for i in range(len(found))}
            updated: dict[int, tuple[np.ndarray, int]] = {}
            for _, (mask, class_index) in mask_dict.items():
                if mask.sum() == 0:
                    continue
                flag = 0
                for object_id, (tracked_mask, _) in sam2_masks.items():
                    intersection = np.logical_and(mask, tracked_mask).sum()
                    union = mask.sum() + tracked_mask.sum() - intersection
                    iou = intersection / union if union else float("nan")
                    if iou > iou_threshold:
                        flag = object_id
                        break
                if not flag:
                    objects_count += 1
                    flag = objects_count
                updated[flag] = (mask, class_index)
            mask_dict = updated
        else:
            mask_dict = sam2_masks
        if not mask_dict:
            for t in range(start, min(start + step, n)):
                video_segments[t] = {}
            continue
        session = tracker.start()  # reset_state: only mask_dict's objects are tracked from here
        session.prompt(start, list(mask_dict), masks=np.stack([m for m, _ in mask_dict.values()]))
        for t in range(start, min(start + step, n - 1) + 1):
            result = session.step(t, frames[t])
            frame_masks = {
                object_id: (result.masks[k] & (result.scores[k] > 0), mask_dict[object_id][1])
                for k, object_id in enumerate(result.object_ids)
            }
            video_segments[t] = frame_masks
            sam2_masks = frame_masks
    out = []
    for t in range(n):
        label_image = np.zeros((HEIGHT, WIDTH), np.int64)
        classes = {}
        for object_id, (mask, class_index) in video_segments.get(t, {}).items():
            label_image[mask] = object_id
            classes[object_id] = class_index
        ids = [i for i in classes if (label_image == i).any()]
        out.append(Tracked(ids, [classes[i] for i in ids], np.stack([label_image == i for i in ids]) if ids
                           else np.zeros((0, HEIGHT, WIDTH), bool)))
    return out


RULES: dict[str, Callable[..., list[Tracked]]] = {"ours": ours_track, "reference": reference_track}


def as_frames(tracked: list[Tracked]) -> Frames:
    return [objects_from_masks(f.masks, f.ids, f.classes) for f in tracked]


# ------------------------------------------------------------------------------------------------ sweep


REFERENCE_IOU_THRESHOLD = 0.8  # hard-coded in the reference demo (L140)


def run_one(scene: str, level: str, step: int, rule: str, seed: int = 0, iou_threshold: float | None = None,
            truth: GroundTruth | None = None, **options) -> dict:
    """One (scene, fault level, step, rule, seed) run, scored. ``iou_threshold`` None: the rule's own default
    (ours: ``DEFAULT_IOU_THRESHOLD``; the reference: 0.8). ``options`` go to ``GroundedTracker`` (ours only)."""
    truth = truth if truth is not None else SCENES[scene].render()
    faults = FAULT_LEVELS[level]
    frames = scene_frames(truth)
    detector = StandInDetector(truth, faults, seed)
    segmenter = StandInSegmenter(truth)
    tracker = StandInVideoTracker(truth, faults, seed)
    if iou_threshold is None:
        iou_threshold = DEFAULT_IOU_THRESHOLD if rule == "ours" else REFERENCE_IOU_THRESHOLD
    if rule == "ours":
        tracked = ours_track(frames, detector, segmenter, tracker, step, iou_threshold, **options)
    else:
        tracked = reference_track(frames, detector, segmenter, tracker, step, iou_threshold)
    scores = evaluate_tracks({scene: truth.tracks()}, {scene: as_frames(tracked)}, kind="masks", by_class=True)
    return {
        "scene": scene, "fault_level": level, "step": step, "rule": rule, "seed": seed,
        "iou_threshold": iou_threshold,
        "hota": round(scores["HOTA"], 4), "idf1": round(scores["IDF1"], 4), "id_switches": scores["IDSW"],
        "deta": round(scores["DetA"], 4), "assa": round(scores["AssA"], 4), "mota": round(scores["MOTA"], 4),
        "pred_ids": len({i for f in tracked for i in f.ids}),
    }


def sweep(scenes, levels, steps, seeds, iou_thresholds, reference_iou=None, ours_options=None) -> Iterator[dict]:
    """Rows averaged over ``seeds``: per scene, level and step, ours at each IoU threshold, then the reference."""
    for scene in scenes:
        truth = SCENES[scene].render()
        for level in levels:
            for step in steps:
                for iou in iou_thresholds:
                    yield average([run_one(scene, level, step, "ours", seed, iou, truth, **(ours_options or {}))
                                   for seed in seeds])
                yield average([run_one(scene, level, step, "reference", seed, reference_iou, truth) for seed in seeds])


def average(rows: list[dict]) -> dict:
    """Seeds folded into one row: scores averaged, ID switches summed over the seeds."""
    first = dict(rows[0])
    first.pop("seed")
    first["seeds"] = len(rows)
    for key in ("hota", "idf1", "deta", "assa", "mota"):
        first[key] = round(float(np.mean([r[key] for r in rows])), 4)
    for key in ("id_switches", "pred_ids"):
        first[key] = int(sum(r[key] for r in rows))
    return first


def print_tables(rows: list[dict]) -> None:
    references = {(r["scene"], r["fault_level"], r["step"]): r for r in rows if r["rule"] == "reference"}
    print(f"{'scene':10} {'faults':7} {'step':>4} {'iou':>4} | {'HOTA ours/ref':>14} | {'IDF1 ours/ref':>14} |"
          f" {'IDSW ours/ref':>13} | {'ids ours/ref':>12}")
    for o in rows:
        r = references.get((o["scene"], o["fault_level"], o["step"]))
        if o["rule"] != "ours" or r is None:
            continue
        print(f"{o['scene']:10} {o['fault_level']:7} {o['step']:4d} {o['iou_threshold']:4.2f} |"
              f" {o['hota']:6.3f} {r['hota']:7.3f} | {o['idf1']:6.3f} {r['idf1']:7.3f} |"
              f" {o['id_switches']:5d} {r['id_switches']:7d} | {o['pred_ids']:4d} {r['pred_ids']:7d}")


def markdown_tables(rows: list[dict], iou_threshold: float = DEFAULT_IOU_THRESHOLD) -> str:
    """bench/README.md's tables: one per scene (ours at ``iou_threshold`` vs the reference, per fault level
    and step), then means over scenes and fault levels per rule, IoU threshold and step."""
    references = {(r["scene"], r["fault_level"], r["step"]): r for r in rows if r["rule"] == "reference"}
    ours = [r for r in rows if r["rule"] == "ours" and r["iou_threshold"] == iou_threshold]
    lines = []
    for scene in dict.fromkeys(r["scene"] for r in rows):
        lines += [f"**{scene}** (ours at IoU {iou_threshold}, the reference at its 0.8)", "", "| faults | step | IoU | HOTA ours | HOTA ref | IDF1 ours | IDF1 ref |"
                  " IDSW ours | IDSW ref |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for o in (o for o in ours if o["scene"] == scene):
            r = references[(scene, o["fault_level"], o["step"])]
            lines.append(f"| {o['fault_level']} | {o['step']} | {o['iou_threshold']} | {o['hota']:.3f} | {r['hota']:.3f} |"
                         f" {o['idf1']:.3f} | {r['idf1']:.3f} | {o['id_switches']} | {r['id_switches']} |")
        lines.append("")
    lines += ["**all scenes and fault levels** (mean HOTA / IDF1, total ID switches)", "",
              "| rule | IoU | step | HOTA | IDF1 | IDSW |", "|---|---:|---:|---:|---:|---:|"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["rule"], r["iou_threshold"], r["step"]), []).append(r)
    for (rule, iou, step), members in sorted(groups.items(), key=lambda kv: (kv[0][0] != "ours", kv[0][1], kv[0][2])):
        lines.append(f"| {rule} | {iou} | {step} | {np.mean([m['hota'] for m in members]):.3f} |"
                     f" {np.mean([m['idf1'] for m in members]):.3f} | {sum(m['id_switches'] for m in members)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    parser.add_argument("--levels", nargs="+", default=list(FAULT_LEVELS), choices=list(FAULT_LEVELS))
    parser.add_argument("--steps", nargs="+", type=int, default=[5, 10, 20, 40])
    parser.add_argument("--iou-thresholds", nargs="+", type=float, default=[DEFAULT_IOU_THRESHOLD],
                        help=f"ours (default: gsam2's default {DEFAULT_IOU_THRESHOLD})")
    parser.add_argument("--reference-iou", type=float, default=REFERENCE_IOU_THRESHOLD,
                        help="the reference's threshold (its demo hard-codes 0.8)")
    parser.add_argument("--no-reidentify", action="store_true",
                        help="ours without re-identification (GroundedTracker(reidentify_within=0)): the rule before it")
    parser.add_argument("--seeds", type=int, default=3, help="random seeds per cell (scores averaged, IDSW summed)")
    parser.add_argument("--markdown", action="store_true", help="also print bench/README.md's tables")
    parser.add_argument("--json", action="store_true", help="print {'rows': [...]} as the last line")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    rows = []
    options = {"reidentify_within": 0} if args.no_reidentify else {}
    for row in sweep(args.scenes, args.levels, args.steps, range(args.seeds), args.iou_thresholds,
                     args.reference_iou, options):
        row["reidentify"] = row["rule"] == "ours" and not args.no_reidentify
        rows.append(row)
        print(f"  {row['scene']} {row['fault_level']} step {row['step']} iou {row['iou_threshold']} {row['rule']}: "
              f"HOTA {row['hota']:.3f} IDF1 {row['idf1']:.3f} IDSW {row['id_switches']}", file=sys.stderr)
    print_tables(rows)
    if args.markdown:
        shown = DEFAULT_IOU_THRESHOLD if DEFAULT_IOU_THRESHOLD in args.iou_thresholds else args.iou_thresholds[0]
        print(markdown_tables(rows, shown))
    print(f"{len(rows)} rows, {args.seeds} seed(s) each, in {time.perf_counter() - began:.0f} s")
    if args.json:
        print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
