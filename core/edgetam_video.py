"""EdgeTAM video tracking through ``transformers`` (``EdgeTamVideoModel`` streaming sessions).

EdgeTAM is the on-device variant of SAM 2: a RepViT image encoder and a 2D
Spatial Perceiver that compresses each frame's memory to a few hundred tokens
before memory attention. transformers serves it with SAM 2's video processor
(``Sam2VideoProcessor``, whose inference session EdgeTAM's model reads the same
way) and SAM 2's streaming interface: ``get_image_features`` (``fpn_hidden_states``,
``fpn_position_encoding``), ``forward(inference_session, frame_idx, frame)``
returning ``object_ids``, ``pred_masks`` and ``object_score_logits``, and the
session's per-object ``output_dict_per_obj`` / ``frames_tracked_per_obj``
which :func:`~.tracker.drop_memories_before` prunes. So
:class:`~.tracker.Sam2VideoTracker` and its :class:`~.tracker.TrackingSession`
serve EdgeTAM unchanged, except for the one place below where transformers'
EdgeTAM differs from its SAM 2.
"""

from __future__ import annotations

import functools

import torch

from .tracker import Sam2VideoTracker


@functools.cache
def _edgetam_video_model_class() -> type:
    """``EdgeTamVideoModel`` with mask prompts scored in the shape every other prompt is.

    transformers 5's ``EdgeTamVideoModel._use_mask_as_output`` returns an object
    score of shape ``(1, 1)`` where the SAM decoder returns ``(1, 1, 1)`` (its
    ``Sam2VideoModel`` unsqueezes; EdgeTAM's copy does not). ``forward`` squeezes
    the last axis of each object's score and concatenates them, so any frame on
    which a mask-prompted object meets one tracked or box-prompted (a new object
    found on a keyframe while others are followed, or that keyframe read again)
    fails with "Tensors must have same number of dimensions". Mask prompts are
    how the video pipeline prompts by default. The memory encoder only compares
    the score with 0 and broadcasts it per object, so the extra axis changes
    nothing else.
    """
    from transformers import EdgeTamVideoModel

    class EdgeTamVideoModelForTracking(EdgeTamVideoModel):
        def _use_mask_as_output(self, *args, **kwargs):
            output = super()._use_mask_as_output(*args, **kwargs)
            if output.object_score_logits.dim() == 2:
                output.object_score_logits = output.object_score_logits.unsqueeze(-1)
            return output

    return EdgeTamVideoModelForTracking


class EdgeTamVideoTracker(Sam2VideoTracker):
    """Loads an EdgeTAM video checkpoint; every video gets its own :class:`~.tracker.TrackingSession`."""

    name = "edgetam-video"

    @classmethod
    def from_pretrained(cls, checkpoint: str, device: torch.device) -> EdgeTamVideoTracker:
        """Load a hub id (``yonigozlan/EdgeTAM-hf``) or a local folder.

        The config's ``model_type`` is checked first: transformers would load a SAM 2
        checkpoint into ``EdgeTamVideoModel`` with only warnings (every weight newly
        initialised) and track with noise. The hub checkpoints' image encoder is timm's
        RepViT, so they need ``timm`` (extra ``edgetam``).
        """
        from transformers import Sam2VideoProcessor

        from .checkpoints import require_model_type

        require_model_type(checkpoint, {"edgetam_video"}, "an EdgeTAM video checkpoint")
        processor = Sam2VideoProcessor.from_pretrained(checkpoint)
        try:
            model = _edgetam_video_model_class().from_pretrained(checkpoint)
        except ImportError as error:  # the RepViT encoder is a timm model: without timm, a one-line load error
            reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
            hint = "EdgeTAM's image encoder is a timm model: pip install 'gsam2[edgetam]'"
            raise ValueError(f"{reason} ({hint})") from error
        return cls(model.to(device).eval(), processor, device)
