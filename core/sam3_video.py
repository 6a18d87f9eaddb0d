"""SAM 3 video: a text prompt straight to tracked masks, with one model (``Sam3VideoModel``).

SAM 3 detects every phrase on every frame and associates its detections with
the objects it already tracks (its own SAM 2-style memory), so there is no
keyframe step, no separate detector and no SAM 2. Frames are streamed one at a
time, as in :mod:`.tracker`, and two things ``transformers``' streaming mode
leaves unbounded are bounded here:

* memory: the session keeps every streamed frame and every frame's memory;
  everything older than what the tracker can still attend to is dropped
  after each frame;
* objects: streaming never ends a track (the offline "hotstart" clean-up
  needs future frames), so an object not seen for ``end_after`` frames is
  removed, as in :class:`~.video_pipeline.GroundedTracker`.

Object ids start at 1 (SAM 3 counts from 0) and are never reused in a video.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import supervision as sv
import torch
from PIL import Image

from .detectors.sam3 import Sam3Detector, max_phrase_tokens
from .devices import inference_context
from .errors import InputError
from .tracker import FrameWindow, drop_memories_before
from .video_pipeline import DEFAULT_STEP, FrameResult

#: Frames an object may stay unseen before its track ends (as the SAM 2 pipeline's default).
DEFAULT_END_AFTER = 2 * DEFAULT_STEP


class Sam3VideoTracker:
    """Loads a SAM 3 video checkpoint; :meth:`track` follows what a prompt names through one video."""

    name = "sam3-video"

    def __init__(self, model: torch.nn.Module, processor, device: torch.device):
        self.model = model
        self.processor = processor
        self.device = device
        self.max_text_len = max_phrase_tokens(model.config.detector_config.text_config)

    # Same tokenizer, same limit as the SAM 3 image detector (``self.processor.tokenizer``
    # and ``self.max_text_len``): share its check.
    validate_phrases = Sam3Detector.validate_phrases

    @classmethod
    def from_pretrained(cls, checkpoint: str, device: torch.device) -> Sam3VideoTracker:
        from transformers import Sam3VideoModel, Sam3VideoProcessor

        processor = Sam3VideoProcessor.from_pretrained(checkpoint)
        model = Sam3VideoModel.from_pretrained(checkpoint)
        return cls(model.to(device).eval(), processor, device)

    def track(
        self,
        frames: Iterable[tuple[int, np.ndarray]],
        phrases: Sequence[str],
        score_threshold: float = 0.0,
        end_after: int = DEFAULT_END_AFTER,
        keep_frames: bool = False,
    ) -> Iterator[FrameResult]:
        """Yield one result per ``(frame_index, rgb)`` frame, in order; ``tracker_id`` is the object id.

        Args:
            phrases: the noun phrases to find (one SAM 3 prompt each); an
                object's ``class_name`` is its phrase, ``class_id`` the phrase's index.
            score_threshold: hide objects whose SAM 3 score is at or below this
                (SAM 3's own thresholds, in the checkpoint's config, decide what
                becomes an object).
            end_after: end an object's track after this many frames unseen.
            keep_frames: attach each RGB frame to its result (for drawing).
        """
        session = self.start(phrases, end_after)  # bad phrases fail here, before any frame is read
        return session.track(frames, score_threshold, keep_frames)

    def check_phrases(self, phrases: Sequence[str]) -> list[str]:
        """The phrases, stripped; an empty list, an empty phrase or one SAM 3 cannot take raises."""
        phrases = [phrase.strip() for phrase in phrases]
        if not phrases or not all(phrases):
            raise InputError("SAM 3 tracking needs at least one non-empty phrase")
        self.validate_phrases(phrases)
        return phrases

    def start(self, phrases: Sequence[str], end_after: int = DEFAULT_END_AFTER) -> Sam3TrackingSession:
        """A new video's state: feed it frames in order with :meth:`Sam3TrackingSession.step`."""
        phrases = self.check_phrases(phrases)
        if end_after < 1:
            raise InputError(f"end_after {end_after}: must be at least 1")
        return Sam3TrackingSession(self, phrases, end_after)


class Sam3TrackingSession:
    """One video's SAM 3 state, pruned after every frame."""

    def __init__(self, tracker: Sam3VideoTracker, phrases: list[str], end_after: int):
        self.tracker, self.phrases, self.end_after = tracker, phrases, end_after
        config = tracker.model.config.tracker_config
        # How far back the tracker looks: memories of the last num_maskmem frames, object
        # pointers of the last max_object_pointers_in_encoder frames, and the closest
        # max_cond_frame_num conditioning frames (for later frames: the latest ones).
        self.history = max(int(config.num_maskmem), int(config.max_object_pointers_in_encoder)) + 1
        self.conditioning_frames = int(config.max_cond_frame_num)
        self.session = tracker.processor.init_video_session(
            inference_device=tracker.device,
            dtype=torch.bfloat16 if tracker.device.type == "cuda" else torch.float32,
        )
        self.session.processed_frames = FrameWindow()
        tracker.processor.add_text_prompt(self.session, phrases)
        # SAM 3 numbers frames itself, consecutively: a skipped frame (stride, decode error)
        # must not look like a gap in time to its memory.
        self.position = 0
        self.unseen: dict[int, int] = {}

    def track(
        self, frames: Iterable[tuple[int, np.ndarray]], score_threshold: float = 0.0, keep_frames: bool = False
    ) -> Iterator[FrameResult]:
        """:meth:`step` over ``(frame_index, rgb)`` frames; see :meth:`Sam3VideoTracker.track`."""
        for frame_index, frame in frames:
            detections = self.step(frame)
            keep = detections.confidence > score_threshold
            yield FrameResult(frame_index, detections[keep], frame if keep_frames else None)

    def step(self, frame: np.ndarray) -> sv.Detections:
        """Find and track every phrase on the next frame; ``tracker_id`` is the object id."""
        processor, model = self.tracker.processor, self.tracker.model
        inputs = processor(images=Image.fromarray(frame), return_tensors="pt")
        with inference_context(self.tracker.device):
            output = model(inference_session=self.session, frame=inputs.pixel_values[0], frame_idx=self.position)
        result = processor.postprocess_outputs(self.session, output, original_sizes=[list(frame.shape[:2])])
        detections = self._to_detections(result)
        self._end_unseen_tracks(output.object_ids, {int(i) - 1 for i in detections.tracker_id})
        self._forget_before(self.position)
        self.position += 1
        return detections

    def _to_detections(self, result: dict) -> sv.Detections:
        object_ids = result["object_ids"].tolist()
        phrase_of = {object_id: phrase for phrase, ids in result["prompt_to_obj_ids"].items() for object_id in ids}
        masks = result["masks"].cpu().numpy().astype(bool)
        # SAM 3's non-overlap rule can empty a mask after the processor's own empty-mask filter.
        keep = [i for i in range(len(masks)) if masks[i].any()]
        masks, object_ids = masks[keep], [object_ids[i] for i in keep]
        names = [phrase_of[object_id] for object_id in object_ids]
        return sv.Detections(
            xyxy=sv.mask_to_xyxy(masks).astype(np.float32) if len(masks) else np.zeros((0, 4), np.float32),
            mask=masks,
            confidence=result["scores"].float().cpu().numpy().astype(np.float64)[keep],
            class_id=np.array([self.phrases.index(name) for name in names], dtype=int),
            tracker_id=np.array(object_ids, dtype=int) + 1,
            data={"class_name": np.array(names, dtype=str)},
        )

    def _end_unseen_tracks(self, tracked_ids: Sequence[int], visible_ids: set[int]) -> None:
        ended = []
        for object_id in tracked_ids:
            self.unseen[object_id] = 0 if object_id in visible_ids else self.unseen.get(object_id, 0) + 1
            if self.unseen[object_id] >= self.end_after:
                ended.append(object_id)
        session = self.session
        for object_id in ended:
            # As Sam3VideoModel drops an object (run_tracker_update_execution_phase), but its
            # scores are forgotten too: ids are never reused (max_obj_id counts on), and
            # bookkeeping for every object ever seen would grow with the video.
            session.remove_object(object_id)
            session.obj_ids = [i for i in session.obj_ids if i != object_id]
            for per_object in (
                session.obj_id_to_score,
                session.obj_id_to_last_occluded,
                session.trk_keep_alive,
                session.obj_first_frame_idx,
                session.unmatched_frame_inds,
            ):
                per_object.pop(object_id, None)
            del self.unseen[object_id]

    def _forget_before(self, current: int) -> None:
        """Drop frames, memories and per-frame bookkeeping SAM 3 will never look at again."""
        session, oldest_kept = self.session, current - self.history
        for index in [i for i in session.processed_frames if i < current]:
            del session.processed_frames[index]
        drop_memories_before(session, oldest_kept)
        for outputs in session.output_dict_per_obj.values():
            conditioning = outputs["cond_frame_outputs"]
            if self.conditioning_frames > 0 and len(conditioning) > self.conditioning_frames:
                latest = sorted(conditioning)[-self.conditioning_frames :]
                for index in [i for i in conditioning if i not in latest and i < oldest_kept]:
                    del conditioning[index]
        # Per-frame bookkeeping (the scores are deep-copied on every frame, so they must stay short).
        for per_frame in (session.obj_id_to_tracker_score_frame_wise, session.suppressed_obj_ids):
            for index in [i for i in per_frame if i < oldest_kept]:
                del per_frame[index]
        for frame_lists in (session.unmatched_frame_inds, session.overlap_pair_to_frame_inds):
            for key in list(frame_lists):
                recent = [i for i in frame_lists[key] if i >= oldest_kept]
                if recent:
                    frame_lists[key] = recent
                else:
                    del frame_lists[key]
