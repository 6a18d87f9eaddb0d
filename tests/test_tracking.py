"""Continuous ids, new objects, objects leaving and the reverse pass, on a scene of coloured squares.

The detector, SAM 2 image segmenter and SAM 2 tracker are deterministic fakes
that speak the real interfaces and "see" squares by colour, so what gets
detected and tracked is known exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from gsam2.core.detections import make_detections
from gsam2.core.tracker import TrackedFrame
from gsam2.core.video_pipeline import ground_and_track, mask_iou, match_to_tracks, sample_points

HEIGHT, WIDTH, SIDE = 60, 100, 10
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def scene(objects: dict[tuple, callable], frames: int):
    """Frames where each colour is a square at ``position(t)`` (``None`` = not in the frame)."""
    for t in range(frames):
        image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        for colour, position in objects.items():
            where = position(t)
            if where is not None:
                x, y = where
                image[y : y + SIDE, x : x + SIDE] = colour
        yield t, image


def colour_mask(image: np.ndarray, colour) -> np.ndarray:
    return (image == np.array(colour, np.uint8)).all(axis=2)


class ColourDetector:
    """Finds squares of the colours it is told about; counts its calls; can be told to miss."""

    name = "fake"
    requires_prompt = True
    produces_masks = False

    def __init__(self, colours: dict[tuple, str], blind_frames: set[int] = frozenset()):
        self.colours, self.blind_frames, self.calls = colours, blind_frames, 0

    def validate_phrases(self, phrases):
        pass

    def detect(self, images, phrases, box_threshold, text_threshold):
        results = []
        for image in images:
            self.calls += 1
            boxes, ids = [], []
            if self.calls - 1 not in self.blind_frames:
                for colour, name in self.colours.items():
                    mask = colour_mask(image, colour)
                    if mask.any() and name in phrases:
                        boxes.append(sv.mask_to_xyxy(mask[None])[0])
                        ids.append(phrases.index(name))
            results.append(make_detections(np.array(boxes).reshape(-1, 4), np.full(len(ids), 0.9), ids, phrases))
        return results


class BoxSegmenter:
    """SAM 2 image stand-in: the non-black pixels inside each box."""

    def embed(self, images):
        return list(images)

    def segment_boxes(self, image, boxes):
        masks = np.zeros((len(boxes), *image.shape[:2]), bool)
        for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes).astype(int)):
            masks[i, y1 : y2 + 1, x1 : x2 + 1] = image[y1 : y2 + 1, x1 : x2 + 1].any(axis=2)
        return masks, np.ones(len(boxes), np.float32)


class ColourTracker:
    """SAM 2 video stand-in: remembers each object's colour from its prompt and finds it in later frames."""

    def __init__(self):
        self.sessions = []

    def start(self):
        session = ColourSession()
        self.sessions.append(session)
        return session


class ColourSession:
    def __init__(self):
        self.colours: dict[int, tuple] = {}
        self.pending = {}
        self.frames = {}
        self.removed = []

    @property
    def object_ids(self):
        return list(self.colours)

    def prompt(self, frame_index, object_ids, boxes=None, masks=None, points=None):
        self.pending[frame_index] = (list(object_ids), boxes, masks, points)

    def step(self, frame_index, frame=None):
        if frame is not None:
            self.frames = {frame_index: frame}
        frame = self.frames[frame_index]
        if frame_index in self.pending:
            ids, boxes, masks, points = self.pending.pop(frame_index)
            for k, object_id in enumerate(ids):
                if masks is not None:
                    y, x = np.argwhere(masks[k])[0]
                elif boxes is not None:
                    x, y = int(boxes[k][0]), int(boxes[k][1])
                else:
                    x, y = points[k][0].astype(int)
                self.colours[object_id] = tuple(frame[y, x])
        ids = list(self.colours)
        masks = (
            np.stack([colour_mask(frame, self.colours[i]) for i in ids]) if ids else np.zeros((0, HEIGHT, WIDTH), bool)
        )
        scores = np.array([1.0 if m.any() else -1.0 for m in masks], np.float32)
        return TrackedFrame(frame_index, ids, masks, scores)

    def remove(self, object_ids):
        for object_id in object_ids:
            if self.colours.pop(object_id, None) is not None:
                self.removed.append(object_id)


def track(frames, prompt="red. green. blue.", blind_frames=frozenset(), **options):
    detector = ColourDetector({RED: "red", GREEN: "green", BLUE: "blue"}, blind_frames)
    tracker = ColourTracker()
    results = list(ground_and_track(frames, prompt, detector, BoxSegmenter(), tracker, **options))
    return results, detector, tracker


def ids_by_class(results):
    """{class name: set of ids it was given}, and per frame {id: class}."""
    by_class, per_frame = {}, []
    for result in results:
        names = result.detections.data["class_name"]
        frame = dict(zip(result.detections.tracker_id.tolist(), names.tolist()))
        per_frame.append(frame)
        for object_id, name in frame.items():
            by_class.setdefault(name, set()).add(object_id)
    return by_class, per_frame


def test_ids_stay_the_same_through_moves_and_keyframes():
    frames = scene({RED: lambda t: (2 + t, 5), GREEN: lambda t: (80 - t, 40)}, frames=50)
    results, detector, _ = track(frames, step=10)
    assert [r.frame_index for r in results] == list(range(50))
    by_class, per_frame = ids_by_class(results)
    assert by_class == {"red": {1}, "green": {2}}
    assert all(frame == {1: "red", 2: "green"} for frame in per_frame)
    assert detector.calls == 5, "detection only every `step` frames"


def test_object_entering_later_gets_the_next_id_and_one_leaving_ends_its_track():
    objects = {
        RED: lambda t: (5 + t, 5),
        BLUE: lambda t: (50, 30) if t >= 13 else None,  # enters at frame 13
        GREEN: lambda t: (70, 40) if t < 7 else None,  # leaves after frame 6
    }
    results, _, tracker = track(scene(objects, 60), step=5)
    by_class, per_frame = ids_by_class(results)
    assert by_class == {"red": {1}, "green": {2}, "blue": {3}}
    assert 3 not in per_frame[14], "found at the keyframe after it entered (15), no reverse pass"
    assert per_frame[15][3] == "blue"
    assert all(2 not in frame for frame in per_frame[7:])
    assert 2 in tracker.sessions[0].removed, "an object gone for end_after frames is dropped from SAM 2"


def test_ids_are_never_reused_when_an_object_comes_back():
    # Gone for frames 5..29, longer than the re-identification window given here (the default,
    # max(4 x step, 100) frames, would continue it: see the next test).
    objects = {RED: lambda t: (5, 5) if t < 5 or t >= 30 else None}
    results, _, _ = track(scene(objects, 40), step=5, end_after=4, reidentify_within=20)
    by_class, _ = ids_by_class(results)
    assert by_class == {"red": {1, 2}}, "the track ended; the returning object is a new track"


def test_an_object_back_soon_where_it_left_keeps_its_id():
    # Hidden for frames 5..14: its track ends after end_after=4 frames unseen, and the detection on
    # keyframe 15, same class and next to where SAM 2 last saw it, continues it (re-identification
    # within max(4 x step, 100) frames).
    objects = {RED: lambda t: (5 + t, 5) if t < 5 or t >= 15 else None}
    results, _, tracker = track(scene(objects, 30), step=5, end_after=4)
    by_class, per_frame = ids_by_class(results)
    assert by_class == {"red": {1}}
    assert 1 in tracker.sessions[0].removed, "the track had ended in SAM 2; it was prompted again"
    assert all(frame == {1: "red"} for frame in per_frame[15:])


def test_an_object_that_left_as_a_sliver_is_known_by_its_whole_size():
    # It slides out of the frame on the right: its last box is 2 pixels wide (a fifth of its area).
    # Back whole next to where it left: re-identified by the size it had while whole, not its sliver.
    objects = {RED: lambda t: (90 + 2 * t, 5) if t < 5 else ((88, 5) if t >= 15 else None)}
    results, _, _ = track(scene(objects, 30), step=5, end_after=4)
    by_class, per_frame = ids_by_class(results)
    assert per_frame[4] == {1: "red"}, "the sliver is still tracked on frame 4"
    assert by_class == {"red": {1}}


def test_reidentification_needs_the_same_class_a_nearby_box_and_a_recent_sighting():
    far = {RED: lambda t: (5, 5) if t < 5 else ((80, 45) if t >= 15 else None)}
    other_class = {RED: lambda t: (5, 5) if t < 5 else None, GREEN: lambda t: (5, 5) if t >= 15 else None}
    for objects, expected in ((far, {"red": {1, 2}}), (other_class, {"red": {1}, "green": {2}})):
        results, _, _ = track(scene(objects, 30), step=5, end_after=4)
        assert ids_by_class(results)[0] == expected
    back = {RED: lambda t: (5, 5) if t < 5 or t >= 15 else None}
    results, _, _ = track(scene(back, 30), step=5, end_after=4, reidentify_within=0)
    assert ids_by_class(results)[0] == {"red": {1, 2}}, "reidentify_within=0 turns it off"


def test_a_missed_detection_does_not_end_a_track():
    frames = scene({RED: lambda t: (5 + t, 5)}, 30)
    results, _, _ = track(frames, step=5, blind_frames={1, 2})  # detector blind at keyframes 5 and 10
    by_class, per_frame = ids_by_class(results)
    assert by_class == {"red": {1}}
    assert all(frame == {1: "red"} for frame in per_frame)


def test_nothing_found_is_an_empty_track_set():
    frames = scene({RED: lambda t: (5, 5)}, 12)
    results, _, _ = track(frames, prompt="dog", step=4)
    assert len(results) == 12 and all(len(r.detections) == 0 for r in results)


def test_empty_keyframes_do_not_crash_and_later_objects_are_found():
    frames = scene({RED: lambda t: (5, 5) if t >= 9 else None}, 20)
    results, _, _ = track(frames, step=3, reverse=True)
    _, per_frame = ids_by_class(results)
    assert per_frame[8] == {} and per_frame[9] == {1: "red"}, "reverse pass reaches back to frame 9"


def test_reverse_pass_covers_the_frames_before_detection_without_duplicates():
    objects = {RED: lambda t: (5 + t, 5), BLUE: lambda t: (60, 30) if t >= 12 else None}
    results, _, _ = track(scene(objects, 40), step=10, reverse=True)
    by_class, per_frame = ids_by_class(results)
    assert by_class == {"red": {1}, "blue": {2}}
    assert [2 in frame for frame in per_frame[10:22]] == [False, False] + [True] * 10
    for result in results:  # one detection per object per frame
        assert len(set(result.detections.tracker_id.tolist())) == len(result.detections)


@pytest.mark.parametrize("prompt_type", ["mask", "box", "point"])
def test_every_prompt_type_tracks(prompt_type):
    results, _, _ = track(scene({GREEN: lambda t: (10 + t, 10)}, 12), step=6, prompt_type=prompt_type)
    by_class, per_frame = ids_by_class(results)
    assert by_class == {"green": {1}} and all(frame == {1: "green"} for frame in per_frame)


def test_best_match_wins_not_the_first():
    new = np.zeros((1, 10, 10), bool)
    new[0, :, :6] = True
    tracked = np.zeros((2, 10, 10), bool)
    tracked[0, :, :8] = True  # IoU 0.75 with the detection
    tracked[1, :, :6] = True  # IoU 1.0
    matches, unmatched = match_to_tracks(new, tracked, [7, 9], iou_threshold=0.5)
    assert matches == {0: 9} and unmatched == []
    matches, unmatched = match_to_tracks(new, tracked, [7, 9], iou_threshold=1.0)
    assert matches == {} and unmatched == [0]


def test_mask_iou_and_points():
    a = np.zeros((1, 4, 4), bool)
    a[0, :2] = True
    b = np.zeros((2, 4, 4), bool)
    b[0, :1] = True
    np.testing.assert_allclose(mask_iou(a, b), [[0.5, 0.0]])
    points = sample_points(a[0], 10, np.random.default_rng(0))
    assert points.shape == (10, 2) and (points[:, 1] < 2).all()


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="prompt type"):
        track(scene({}, 1), prompt_type="scribble")
    with pytest.raises(ValueError, match="step"):
        track(scene({}, 1), step=0)
