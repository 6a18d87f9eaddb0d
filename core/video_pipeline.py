"""Ground and track: a text prompt in, every matching object followed through a video with a stable id.

Detection runs every ``step`` frames. Each detection's SAM 2 image mask is
compared with the masks being tracked on that frame: the best match (mask
IoU above ``iou_threshold``) keeps its id, anything unmatched becomes a new
object with the next id. Objects the detector misses at a keyframe keep being
tracked (the reference drops them); objects SAM 2 no longer sees for
``end_after`` frames end their track. A detection that matches no visible
object but has the class of one SAM 2 lost at most ``reidentify_within``
frames ago (default 4 x step, at least 100 frames), next to where it was last seen or to where its
motion would have taken it, continues that object's id (re-identification:
objects coming back from behind an occluder or from outside the frame). Any
other new detection gets a new id, never one used before.
bench/track_identity.py measures this rule against the reference's.

With ``reverse=True``, objects first found after the first frame are also
tracked backwards from where they were found, so that their tracks start
when they appear rather than at the next keyframe. Results are then held back
``reverse_window`` frames so the backward masks can be merged in before a
frame is emitted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import supervision as sv

from .detectors import Detector
from .detectors.base import detector_phrases
from .segmenter import Sam2ImageSegmenter
from .spec import DEFAULT_IOU_THRESHOLD, DEFAULT_STEP, PROMPT_TYPES
from .tracker import Sam2VideoTracker, TrackedFrame

POINTS_PER_OBJECT = 10
# Re-identification (see GroundedTracker._reidentify): a detection may continue an object SAM 2 lost
# if it has the object's class, its box is within this many of the object's last box diagonals of
# where SAM 2 last saw it, and the two boxes' areas are within this ratio.
REID_DISTANCE = 2.0
REID_AREA_RATIO = 2.5
# ... and if SAM 2 last saw it at most this many keyframe steps ago, and never less than REID_FRAMES
# frames (about 3 s at 30 fps): bench/track_identity.py's re-entry and occlusion scenes keep objects away
# for up to ~65 frames, and a window of 4 x step alone (20 frames at step 5) gave them new ids.
REID_STEPS = 4
REID_FRAMES = 100
# An object's remembered size fades by this factor per frame it is seen (TrackInfo.size).
SIZE_MEMORY = 0.98


def mask_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two stacks of boolean masks: ``(N, H, W)`` x ``(M, H, W)`` -> ``(N, M)``."""
    if len(first) == 0 or len(second) == 0:
        return np.zeros((len(first), len(second)), dtype=np.float32)
    a = first.reshape(len(first), -1).astype(np.float32)
    b = second.reshape(len(second), -1).astype(np.float32)
    intersection = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1), 0.0).astype(np.float32)


def match_to_tracks(
    new_masks: np.ndarray, tracked_masks: np.ndarray, tracked_ids: Sequence[int], iou_threshold: float
) -> tuple[dict[int, int], list[int]]:
    """Assign new detections to tracked objects, best IoU first, one to one.

    Returns ``{detection index: object id}`` for matches above the threshold and
    the indices of unmatched detections. (The reference takes the *first*
    tracked object above the threshold, which swaps ids between neighbours.)
    """
    ious = mask_iou(new_masks, tracked_masks)
    matches: dict[int, int] = {}
    used: set[int] = set()
    for flat in np.argsort(-ious, axis=None, kind="stable"):
        row, column = np.unravel_index(flat, ious.shape)
        if ious[row, column] <= iou_threshold:
            break
        if row in matches or column in used:
            continue
        matches[int(row)] = int(tracked_ids[column])
        used.add(int(column))
    return matches, [i for i in range(len(new_masks)) if i not in matches]


def sample_points(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` pixel ``(x, y)`` points drawn uniformly from a mask (with repeats if it is tiny)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("cannot sample points from an empty mask")
    picks = rng.choice(len(xs), size=count, replace=len(xs) < count)
    return np.stack([xs[picks], ys[picks]], axis=1).astype(np.float32)


@dataclass
class TrackInfo:
    class_name: str
    class_id: int
    confidence: float
    first_frame: int
    absent_for: int = 0
    last_seen: int = -1  # the last frame SAM 2 saw the object on
    last_box: np.ndarray | None = None  # its xyxy box there
    velocity: np.ndarray | None = None  # its box centre's recent motion, pixels per frame
    size: np.ndarray | None = None  # its whole size (box width, height): a slowly fading maximum over sightings


@dataclass
class FrameResult:
    """The objects on one frame: ``detections.tracker_id`` is the object id."""

    frame_index: int
    detections: sv.Detections
    frame: np.ndarray | None = field(default=None, repr=False)


class GroundedTracker:
    """The continuous-id state machine over one video; feed it frames in order with :meth:`process`."""

    def __init__(
        self,
        phrases: list[str],
        detector: Detector,
        segmenter: Sam2ImageSegmenter | None,
        tracker: Sam2VideoTracker,
        step: int = DEFAULT_STEP,
        iou_threshold: float = DEFAULT_IOU_THRESHOLD,
        prompt_type: str = "mask",
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        end_after: int | None = None,
        reverse: bool = False,
        reverse_window: int | None = None,
        keep_frames: bool = False,
        seed: int = 0,
        reidentify_within: int | None = None,
    ):
        if prompt_type not in PROMPT_TYPES:
            raise ValueError(f"prompt type {prompt_type!r}: choose one of {', '.join(PROMPT_TYPES)}")
        if step < 1:
            raise ValueError(f"step {step}: must be at least 1")
        self.phrases, self.detector, self.segmenter, self.tracker = phrases, detector, segmenter, tracker
        self.step, self.iou_threshold, self.prompt_type = step, iou_threshold, prompt_type
        self.box_threshold, self.text_threshold = box_threshold, text_threshold
        self.end_after = end_after if end_after is not None else 2 * step
        self.reidentify_within = reidentify_within if reidentify_within is not None else max(REID_STEPS * step, REID_FRAMES)
        self.reverse = reverse
        self.reverse_window = (reverse_window if reverse_window is not None else 2 * step) if reverse else 0
        self.keep_frames = keep_frames
        self.session = tracker.start()
        self.tracks: dict[int, TrackInfo] = {}
        self.next_id = 1
        self.frames_seen = 0
        self.rng = np.random.default_rng(seed)
        # Results not emitted yet (reverse mode) and the raw frames a backward pass may need.
        self.pending: deque[FrameResult] = deque()
        self.recent_frames: deque[tuple[int, np.ndarray]] = deque(maxlen=self.reverse_window + 1)

    # ------------------------------------------------------------------ public

    def process(self, frame_index: int, frame: np.ndarray) -> list[FrameResult]:
        """Track one frame; return the results that are final now (in order)."""
        is_keyframe = self.frames_seen % self.step == 0
        self.frames_seen += 1
        if self.reverse:
            self.recent_frames.append((frame_index, frame))
        tracked = self._keyframe(frame_index, frame) if is_keyframe else self.session.step(frame_index, frame)
        self._update_absence(tracked)
        self.pending.append(FrameResult(frame_index, self._to_detections(tracked), frame if self.keep_frames else None))
        ready = []
        while len(self.pending) > self.reverse_window:
            ready.append(self.pending.popleft())
        return ready

    def flush(self) -> list[FrameResult]:
        """The results still held back at the end of the video."""
        ready = list(self.pending)
        self.pending.clear()
        return ready

    # ----------------------------------------------------------------- keyframes

    def _keyframe(self, frame_index: int, frame: np.ndarray) -> TrackedFrame:
        tracked = self.session.step(frame_index, frame) if self.session.object_ids else None
        [found] = self.detector.detect([frame], self.phrases, self.box_threshold, self.text_threshold)
        if len(found) == 0:
            return tracked if tracked is not None else self.session.step(frame_index, frame)
        if found.mask is not None:  # detectors such as SAM 3 segment as they detect
            masks = found.mask
        else:
            [embedding] = self.segmenter.embed([frame])
            masks, _ = self.segmenter.segment_boxes(embedding, found.xyxy)
        if tracked is not None:
            visible = tracked.visible()
            matches, unmatched = match_to_tracks(
                masks, tracked.masks[visible], [tracked.object_ids[i] for i in visible], self.iou_threshold
            )
            for detection_index, object_id in matches.items():
                self.tracks[object_id].confidence = float(found.confidence[detection_index])
        else:
            unmatched = list(range(len(found)))
        unmatched = [i for i in unmatched if masks[i].any()]
        visible_ids = set() if tracked is None else {tracked.object_ids[i] for i in tracked.visible()}
        returning = self._reidentify(frame_index, found, masks, unmatched, visible_ids)
        unmatched = [i for i in unmatched if i not in returning]
        if not unmatched and not returning:
            return tracked if tracked is not None else self.session.step(frame_index, frame)
        new_ids = list(range(self.next_id, self.next_id + len(unmatched)))
        self.next_id += len(unmatched)
        for object_id, i in zip(new_ids, unmatched):
            self.tracks[object_id] = TrackInfo(
                str(found.data["class_name"][i]), int(found.class_id[i]), float(found.confidence[i]), frame_index
            )
        for i, object_id in returning.items():
            info = self.tracks[object_id]
            info.confidence, info.absent_for = float(found.confidence[i]), 0
        prompted = unmatched + list(returning)
        self._prompt(
            self.session, frame_index, new_ids + list(returning.values()), found.xyxy[prompted], masks[prompted]
        )
        # With objects already tracked, frame_index is in the session: re-run it with the new prompts.
        tracked = self.session.step(frame_index, None if tracked is not None else frame)
        if self.reverse and self.frames_seen > 1:
            self._track_backwards(frame_index, new_ids, found.xyxy[unmatched], masks[unmatched])
        return tracked

    def _reidentify(
        self, frame_index: int, found: sv.Detections, masks: np.ndarray, unmatched: list[int], visible: set[int]
    ) -> dict[int, int]:
        """``{detection index: object id}`` for unmatched detections that are objects SAM 2 lost.

        An object hidden behind another or gone out of the frame for a while
        often comes back where it left; SAM 2 may not pick it up again (or its
        track already ended). A detection of the same class whose box is within
        ``REID_DISTANCE`` diagonals of the object's last box, with an area within
        ``REID_AREA_RATIO`` of it, continues that object if SAM 2 last saw it
        at most ``reidentify_within`` frames ago. Nearest pairs first, one to one.
        """
        if not self.reidentify_within or not unmatched:
            return {}
        candidates = [
            object_id
            for object_id, info in self.tracks.items()
            if object_id not in visible
            and info.last_box is not None
            and frame_index - info.last_seen <= self.reidentify_within
        ]
        pairs = []
        for i in unmatched:
            box = found.xyxy[i].astype(np.float64)
            centre = (box[:2] + box[2:]) / 2
            for object_id in candidates:
                info = self.tracks[object_id]
                if info.class_id != int(found.class_id[i]):
                    continue
                last = info.last_box
                size = info.size if info.size is not None else last[2:] - last[:2]
                # A detection no bigger than the object ever was (with slack for box noise), and not a
                # sliver of it along both axes: an occluder or the frame's edge cuts one side at a time.
                width, height = box[2:] - box[:2]
                if width > REID_AREA_RATIO * size[0] + 2 or height > REID_AREA_RATIO * size[1] + 2:
                    continue
                if width * REID_AREA_RATIO < size[0] and height * REID_AREA_RATIO < size[1]:
                    continue
                # Where it was last seen, or where it would be had it kept moving as it did: the nearer counts,
                # in the object's whole diagonals (the last box may be a sliver of it).
                last_centre = (last[:2] + last[2:]) / 2
                expected = [last_centre]
                if info.velocity is not None:
                    expected.append(last_centre + info.velocity * (frame_index - info.last_seen))
                diagonal = max(float(np.linalg.norm(size)), 1.0)
                distance = min(float(np.linalg.norm(centre - c)) for c in expected) / diagonal
                if distance <= REID_DISTANCE:
                    pairs.append((distance, i, object_id))
        returning: dict[int, int] = {}
        for _, i, object_id in sorted(pairs):
            if i not in returning and object_id not in returning.values():
                returning[i] = object_id
        return returning

    def _prompt(self, session, frame_index, object_ids, boxes, masks) -> None:
        if self.prompt_type == "mask":
            session.prompt(frame_index, object_ids, masks=masks)
        elif self.prompt_type == "box":
            session.prompt(frame_index, object_ids, boxes=boxes)
        else:
            points = np.stack([sample_points(mask, POINTS_PER_OBJECT, self.rng) for mask in masks])
            session.prompt(frame_index, object_ids, points=points)

    def _track_backwards(self, frame_index, object_ids, boxes, masks) -> None:
        """Follow newly found objects back through the held-back frames and merge them in."""
        backward = self.tracker.start()
        earlier = [(i, f) for i, f in reversed(self.recent_frames) if i < frame_index]
        if not earlier:
            return
        self._prompt(backward, 0, object_ids, boxes, masks)
        backward.step(0, self.recent_frames[-1][1])
        results = {result.frame_index: result for result in self.pending}
        for position, (index, frame) in enumerate(earlier, start=1):
            tracked = backward.step(position, frame)
            result = results.get(index)
            if result is None:
                continue
            additions = self._to_detections(tracked, exclude=set(result.detections.tracker_id.tolist()))
            if len(additions) and len(result.detections):
                # An object already tracked there under another id is the same object: skip it.
                overlap = mask_iou(additions.mask, result.detections.mask).max(axis=1)
                additions = additions[overlap <= self.iou_threshold]
            if len(additions):
                result.detections = sv.Detections.merge([result.detections, additions])

    # ------------------------------------------------------------------ helpers

    def _update_absence(self, tracked: TrackedFrame) -> None:
        shown = tracked.visible()
        visible = {tracked.object_ids[i] for i in shown}
        if self.reidentify_within and shown:
            for i, box in zip(shown, sv.mask_to_xyxy(tracked.masks[shown]).astype(np.float64)):
                info = self.tracks[tracked.object_ids[i]]
                if info.last_box is not None and info.last_seen == tracked.frame_index - 1:
                    motion = (box[:2] + box[2:] - info.last_box[:2] - info.last_box[2:]) / 2
                    info.velocity = motion if info.velocity is None else 0.7 * info.velocity + 0.3 * motion
                info.last_seen, info.last_box = tracked.frame_index, box
                # The last box of an object going behind something, or out of the frame, is a sliver of it:
                # remember its whole size for re-identification (fading, so that an object that does get
                # smaller, moving away, is followed).
                wh = box[2:] - box[:2]
                info.size = wh if info.size is None else np.maximum(wh, SIZE_MEMORY * info.size)
        ended = []
        for object_id in tracked.object_ids:
            info = self.tracks[object_id]
            info.absent_for = 0 if object_id in visible else info.absent_for + 1
            if info.absent_for >= self.end_after:
                ended.append(object_id)
        self.session.remove(ended)

    def _to_detections(self, tracked: TrackedFrame, exclude: set[int] = frozenset()) -> sv.Detections:
        return tracked_detections(tracked, self.tracks, exclude)


def tracked_detections(
    tracked: TrackedFrame, tracks: dict[int, TrackInfo], exclude: set[int] = frozenset()
) -> sv.Detections:
    """The visible objects of a tracked frame as detections, labelled from ``tracks``, ``tracker_id`` = object id."""
    keep = [i for i in tracked.visible() if tracked.object_ids[i] not in exclude]
    masks = tracked.masks[keep]
    ids = [tracked.object_ids[i] for i in keep]
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(masks).astype(np.float32) if keep else np.zeros((0, 4), np.float32),
        mask=masks,
        # float64 so that a carried-over confidence of 0.7 stays 0.7
        confidence=np.array([tracks[i].confidence for i in ids], dtype=np.float64),
        class_id=np.array([tracks[i].class_id for i in ids], dtype=int),
        tracker_id=np.array(ids, dtype=int),
        data={"class_name": np.array([tracks[i].class_name for i in ids], dtype=str)},
    )


def ground_and_track(
    frames: Iterable[tuple[int, np.ndarray]],
    prompt: str | Sequence[str],
    detector: Detector,
    segmenter: Sam2ImageSegmenter | None,
    tracker: Sam2VideoTracker,
    **options,
) -> Iterator[FrameResult]:
    """Track what ``prompt`` names through ``(frame_index, rgb)`` frames; yield one result per frame, in order.

    ``options`` are :class:`GroundedTracker`'s (``step``, ``iou_threshold``,
    ``prompt_type``, ``box_threshold``, ``text_threshold``, ``end_after``,
    ``reverse``, ``reverse_window``, ``keep_frames``, ``reidentify_within``:
    frames, 0 turns re-identification off). Frames are consumed
    one at a time; nothing but SAM 2's bounded memory and, with ``reverse``,
    the last ``reverse_window`` frames is kept.
    """
    phrases = detector_phrases(detector, prompt)
    state = GroundedTracker(phrases, detector, segmenter, tracker, **options)
    for frame_index, frame in frames:
        yield from state.process(frame_index, frame)
    yield from state.flush()


@dataclass
class BoxPrompt:
    """An object to follow, given on one frame: a pixel box, its label, and its id (``None`` = new)."""

    frame_index: int
    box: np.ndarray
    label: str
    object_id: int | None = None
    confidence: float | None = None


def track_from_boxes(
    frames: Iterable[tuple[int, np.ndarray]],
    prompts: Sequence[BoxPrompt],
    tracker: Sam2VideoTracker,
    keep_frames: bool = False,
) -> Iterator[FrameResult]:
    """Propagate given boxes (e.g. an annotator's key frames) through a video with SAM 2.

    A box with an ``object_id`` continues that object (a second box of the same
    id on a later frame corrects it); a box without one starts a new object
    with the next free id. Labels are kept; ``confidence`` is carried over.
    """
    used = {p.object_id for p in prompts if p.object_id is not None}
    next_id = max(used, default=0) + 1
    by_frame: dict[int, list[tuple[int, BoxPrompt]]] = {}
    tracks: dict[int, TrackInfo] = {}
    for prompt in sorted(prompts, key=lambda p: p.frame_index):
        object_id = prompt.object_id
        if object_id is None:
            object_id, next_id = next_id, next_id + 1
        by_frame.setdefault(prompt.frame_index, []).append((object_id, prompt))
        tracks.setdefault(
            object_id,
            TrackInfo(prompt.label, 0, np.nan if prompt.confidence is None else prompt.confidence, prompt.frame_index),
        )
    labels = sorted({info.class_name for info in tracks.values()})
    for info in tracks.values():
        info.class_id = labels.index(info.class_name)
    session = tracker.start()
    for frame_index, frame in frames:
        if frame_index in by_frame:
            ids = [object_id for object_id, _ in by_frame[frame_index]]
            boxes = np.stack([np.asarray(p.box, np.float32) for _, p in by_frame[frame_index]])
            session.prompt(frame_index, ids, boxes=boxes)
        tracked = session.step(frame_index, frame)
        detections = tracked_detections(tracked, tracks)
        yield FrameResult(frame_index, detections, frame if keep_frames else None)
