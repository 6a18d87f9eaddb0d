"""SAM 2 video tracking through ``transformers`` (``Sam2VideoModel`` streaming sessions).

Frames are fed one at a time. ``transformers`` keeps every streamed frame and
every frame's memory in its session; here everything older than what SAM 2
can still attend to (the last ``num_maskmem`` memories and
``max_object_pointers_in_encoder`` object pointers) is dropped after each
frame, so memory stays flat however long the video is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .devices import inference_context
from .masks import dense_masks


@dataclass
class EncodedFrame:
    """One frame through SAM 2's image encoder: shareable by every session tracking on that frame."""

    pixel_values: torch.Tensor  # (3, S, S) as the processor prepares it
    features: dict  # {"vision_feats", "vision_pos_embeds"}, as transformers caches them
    size: tuple[int, int]  # the frame's (height, width)


@dataclass
class TrackedFrame:
    """SAM 2's answer for one frame: a mask and presence score per tracked object id."""

    frame_index: int
    object_ids: list[int]
    masks: np.ndarray  # (N, H, W) bool, empty where the object is not visible
    scores: np.ndarray  # (N,) object presence logits; > 0 means "visible"

    def visible(self) -> list[int]:
        return [i for i, score in enumerate(self.scores) if score > 0 and self.masks[i].any()]


class Sam2VideoTracker:
    """Loads a SAM 2 video checkpoint; every video gets its own :class:`TrackingSession`."""

    name = "sam2-video"

    def __init__(self, model: torch.nn.Module, processor, device: torch.device):
        self.model = model
        self.processor = processor
        self.device = device

    @classmethod
    def from_pretrained(cls, checkpoint: str, device: torch.device) -> Sam2VideoTracker:
        from transformers import Sam2VideoModel, Sam2VideoProcessor

        from .checkpoints import require_model_type

        require_model_type(checkpoint, {"sam2", "sam2_video"}, "a SAM 2 video checkpoint")
        processor = Sam2VideoProcessor.from_pretrained(checkpoint)
        model = Sam2VideoModel.from_pretrained(checkpoint)
        return cls(model.to(device).eval(), processor, device)

    def start(self, keep_pixel_frames: int | None = None) -> TrackingSession:
        """A new video's memory; ``keep_pixel_frames`` bounds the decoded frames it keeps (default: as many as
        SAM 2 looks back, so keyframes can be re-run; 0 for callers that never re-run a frame)."""
        return TrackingSession(self, keep_pixel_frames)

    def encode(self, frame: np.ndarray) -> EncodedFrame:
        """Run the image encoder once on ``frame``, for any number of sessions to step on it."""
        pixel_values = self.processor(images=Image.fromarray(frame), return_tensors="pt").pixel_values[0]
        with inference_context(self.device):
            outputs = self.model.get_image_features(pixel_values[None].to(self.device), return_dict=True)
        features = {"vision_feats": outputs.fpn_hidden_states, "vision_pos_embeds": outputs.fpn_position_encoding}
        return EncodedFrame(pixel_values, features, frame.shape[:2])


class FrameWindow(dict):
    """``processed_frames`` that holds only recent frames but reports the video's length so far.

    When a frame is re-run without a new image (new prompts on a keyframe),
    transformers reads ``len(processed_frames)`` as the number of frames in the
    video and ignores memories at or beyond it; with old frames pruned, a plain
    dict would hide every recent memory from that re-run. The length is
    remembered, so even an emptied window reports it.
    """

    def __init__(self):
        super().__init__()
        self.length = 0

    def __setitem__(self, index: int, frame) -> None:
        super().__setitem__(index, frame)
        self.length = max(self.length, index + 1)

    def __len__(self) -> int:
        return self.length


class TrackingSession:
    """One video's SAM 2 memory: prompt objects on a frame, then step frame by frame."""

    def __init__(self, tracker: Sam2VideoTracker, keep_pixel_frames: int | None = None):
        self.tracker = tracker
        config = tracker.model.config
        # How far back SAM 2 looks: memories of the last num_maskmem frames and
        # object pointers of the last max_object_pointers_in_encoder frames.
        self.history = max(int(config.num_maskmem), int(config.max_object_pointers_in_encoder)) + 1
        self.keep_pixel_frames = self.history if keep_pixel_frames is None else keep_pixel_frames
        self.session = tracker.processor.init_video_session(
            inference_device=tracker.device,
            dtype=torch.bfloat16 if tracker.device.type == "cuda" else torch.float32,
        )
        self.session.processed_frames = FrameWindow()
        self._pending: dict[int, tuple[list[int], dict]] = {}
        self._size: tuple[int, int] | None = None

    @property
    def object_ids(self) -> list[int]:
        return list(self.session.obj_ids)

    def prompt(
        self,
        frame_index: int,
        object_ids: Sequence[int],
        boxes: np.ndarray | None = None,
        masks: np.ndarray | None = None,
        points: np.ndarray | None = None,
    ) -> None:
        """Queue prompts for new objects on ``frame_index`` (applied by the next :meth:`step` of that frame).

        One of: ``boxes`` ``(N, 4)`` pixel xyxy; ``masks`` ``(N, H, W)`` bool;
        ``points`` ``(N, P, 2)`` positive clicks.
        """
        if not len(object_ids):
            return
        if masks is not None:
            inputs = {"input_masks": [np.asarray(m, dtype=bool) for m in masks]}
        elif boxes is not None:
            inputs = {"input_boxes": [np.asarray(boxes, dtype=np.float32).reshape(-1, 4).tolist()]}
        elif points is not None:
            points = np.asarray(points, dtype=np.float32)
            inputs = {
                "input_points": [points.tolist()],
                "input_labels": [np.ones(points.shape[:2], dtype=int).tolist()],
            }
        else:
            raise ValueError("prompt needs boxes, masks or points")
        if frame_index in self._pending:
            raise ValueError("prompt all new objects of a frame in one call")
        self._pending[frame_index] = (list(object_ids), inputs)

    def step(
        self, frame_index: int, frame: np.ndarray | None = None, encoded: EncodedFrame | None = None
    ) -> TrackedFrame:
        """Track every object onto ``frame`` (pass ``frame=None`` to re-run the last frame after new prompts).

        ``encoded`` is the frame already through the image encoder
        (:meth:`Sam2VideoTracker.encode`): sessions tracking different objects on
        the same frame then share one encoder pass and one copy of its features.
        """
        processor, model = self.tracker.processor, self.tracker.model
        pixel_values = None
        if encoded is not None:
            self._size, pixel_values = encoded.size, encoded.pixel_values
            self.session.cache.cache_vision_features(frame_index, encoded.features)
        elif frame is not None:
            self._size = frame.shape[:2]
            pixel_values = processor(images=Image.fromarray(frame), return_tensors="pt").pixel_values[0]
        if frame_index in self._pending:
            ids, inputs = self._pending.pop(frame_index)
            processor.add_inputs_to_inference_session(
                self.session, frame_idx=frame_index, obj_ids=ids, original_size=self._size, **inputs
            )
        if self.session.get_obj_num() == 0:
            if pixel_values is not None:
                self._forget_before(frame_index + 1)
            return TrackedFrame(frame_index, [], np.zeros((0, *self._size), bool), np.zeros((0,), np.float32))
        with inference_context(self.tracker.device):
            if pixel_values is not None:
                output = model(inference_session=self.session, frame=pixel_values, frame_idx=frame_index)
            else:
                output = model(inference_session=self.session, frame_idx=frame_index)
        if encoded is not None:
            self.session.cache.clear_all()  # the features belong to the caller's shared encoding
        # Upsampled where the logits are (the GPU when there is one) and only over each mask's support
        # (core/masks.py): post_process_masks' pixels without moving float logits to the host first.
        scores = output.object_score_logits.float().cpu().numpy().reshape(-1)
        masks = dense_masks(output.pred_masks[:, 0].float(), *self._size)
        masks[scores <= 0] = False
        self._forget_before(frame_index - self.history)
        self._drop_pixel_frames_before(frame_index + 1 - self.keep_pixel_frames)
        return TrackedFrame(frame_index, list(output.object_ids), masks, scores)

    def memory_bytes(self) -> int:
        """Bytes of the tensors this session holds (memories, prompts, kept frames), each tensor counted once."""
        seen, total = set(), 0
        stack = [self.session.output_dict_per_obj, self.session.mask_inputs_per_obj,
                 self.session.point_inputs_per_obj, dict(self.session.processed_frames or {})]
        while stack:
            item = stack.pop()
            if isinstance(item, torch.Tensor):
                key = (item.untyped_storage().data_ptr(), item.device)
                if key not in seen:
                    seen.add(key)
                    total += item.untyped_storage().nbytes()
            elif isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
        return total

    def remove(self, object_ids: Sequence[int]) -> None:
        """Stop tracking these objects (their tracks have ended): frees their memory and compute."""
        doomed = {self.session._obj_id_to_idx[i] for i in object_ids if i in self.session._obj_id_to_idx}
        if not doomed:
            return
        session = self.session
        keep = [idx for idx in range(session.get_obj_num()) if idx not in doomed]
        # transformers indexes per-object state by position: rebuild it without the removed ones.
        per_object = ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj", "frames_tracked_per_obj")
        saved = {name: getattr(session, name) for name in per_object}
        ids = [session._obj_idx_to_id[idx] for idx in keep]
        session._obj_id_to_idx.clear()
        session._obj_idx_to_id.clear()
        for new_idx, (old_idx, obj_id) in enumerate(zip(keep, ids)):
            session._obj_id_to_idx[obj_id] = new_idx
            session._obj_idx_to_id[new_idx] = obj_id
        for name in per_object:
            setattr(session, name, {new_idx: saved[name][old_idx] for new_idx, old_idx in enumerate(keep)})
        session.obj_ids = ids
        session.obj_with_new_inputs = [i for i in session.obj_with_new_inputs if i in ids]

    def _drop_pixel_frames_before(self, oldest_kept: int) -> None:
        frames = self.session.processed_frames
        for index in [i for i in frames if i < oldest_kept]:
            del frames[index]

    def _forget_before(self, oldest_kept: int) -> None:
        """Drop frames and per-frame memories SAM 2 will never look at again."""
        session = self.session
        if session.processed_frames:
            for index in [i for i in session.processed_frames if i < oldest_kept]:
                del session.processed_frames[index]
        drop_memories_before(session, oldest_kept)


def drop_memories_before(session, oldest_kept: int) -> None:
    """Drop every object's tracked (non-conditioning) memories of frames before ``oldest_kept``.

    Works on the sessions of both ``Sam2VideoModel`` and ``Sam3VideoModel``, which
    keep per-object outputs the same way.
    """
    for outputs in session.output_dict_per_obj.values():
        for index in [i for i in outputs["non_cond_frame_outputs"] if i < oldest_kept]:
            del outputs["non_cond_frame_outputs"][index]
    for tracked in session.frames_tracked_per_obj.values():
        for index in [i for i in tracked if i < oldest_kept]:
            del tracked[index]
