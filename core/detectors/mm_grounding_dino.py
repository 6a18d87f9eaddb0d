"""MM-Grounding-DINO through ``transformers`` (``MMGroundingDinoForObjectDetection``).

MM-Grounding-DINO is OpenMMLab's open re-training of Grounding DINO (same
architecture plus a learned bias in the text-image contrastive head, trained
on more grounding data), with better zero-shot results. transformers serves it
with Grounding DINO's processor and output type: the forward pass is
``GroundingDinoForObjectDetection.forward``, ``logits`` are the
``(queries, max_text_len)`` token similarities (``-inf`` past the prompt) and
``pred_boxes`` normalised ``(cx, cy, w, h)``. So everything after loading is
:class:`~.grounding_dino.GroundingDinoDetector`'s: the prompt's token-to-phrase
map, the thresholds and the box scaling.
"""

from __future__ import annotations

import torch

from .grounding_dino import GroundingDinoDetector

class MMGroundingDinoDetector(GroundingDinoDetector):
    """Text-prompted detection with a ``transformers`` MM-Grounding-DINO checkpoint."""

    name = "mm-grounding-dino"

    @classmethod
    def from_pretrained(cls, checkpoint: str, device: torch.device) -> MMGroundingDinoDetector:
        """Load a hub id (``openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det``) or a local folder.

        The config's ``model_type`` is checked first: transformers would load a plain Grounding DINO checkpoint
        into this class with only a warning, leaving the contrastive heads' bias at its initial value, and every
        score would silently shift. Grounding DINO checkpoints are the ``grounding-dino`` backend.
        """
        from transformers import AutoProcessor, MMGroundingDinoForObjectDetection

        from ..checkpoints import require_model_type

        require_model_type(checkpoint, {"mm-grounding-dino"}, "MM-Grounding-DINO")
        processor = AutoProcessor.from_pretrained(checkpoint)  # GroundingDinoProcessor for this model type
        model = MMGroundingDinoForObjectDetection.from_pretrained(checkpoint)
        return cls(model.to(device).eval(), processor, device)
