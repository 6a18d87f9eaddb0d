"""OWLv2 / OWL-ViT through ``transformers`` (``AutoModelForZeroShotObjectDetection``).

OWL models score every query box against every phrase separately (one text
query per class), so a box is labelled with its best-scoring phrase and there
is one threshold: ``box_threshold``. They are smaller and faster than
Grounding DINO and handle long class lists well, but localise less tightly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv
import torch
from PIL import Image

from ..detections import empty_detections, make_detections
from ..devices import inference_context
from ..errors import PromptError
from .base import check_resized_shapes


def owl_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    phrases: Sequence[str],
    image_size: tuple[int, int],
) -> sv.Detections:
    """One image's post-processed OWL outputs as detections sorted by score, boxes clipped to the image.

    ``labels`` index ``phrases``; padded text queries (OWL pads every image's
    query list to the batch's longest) never win because every image gets the
    same phrases.
    """
    height, width = image_size
    if len(scores) == 0:
        return empty_detections(height, width, with_masks=False)
    xyxy = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
    order = np.argsort(-np.asarray(scores), kind="stable")
    return make_detections(xyxy[order], np.asarray(scores, dtype=np.float32)[order], np.asarray(labels)[order], phrases)


class Owlv2Detector:
    """Text-prompted detection with an OWLv2 (or OWL-ViT) checkpoint."""

    name = "owlv2"
    requires_prompt = True
    produces_masks = False

    def __init__(self, model: torch.nn.Module, processor, device: torch.device):
        self.model = model
        self.processor = processor
        self.device = device
        self.max_text_len = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def from_pretrained(cls, checkpoint: str, device: torch.device) -> Owlv2Detector:
        """Load a hub id (``google/owlv2-base-patch16-ensemble``) or a local folder."""
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        processor = AutoProcessor.from_pretrained(checkpoint)
        model = AutoModelForZeroShotObjectDetection.from_pretrained(checkpoint)
        return cls(model.to(device).eval(), processor, device)

    @property
    def input_side(self) -> int:
        size = self.processor.image_processor.size
        return int(size.get("height") or size.get("shortest_edge") or 960)

    def resize_scale(self, height: int, width: int) -> float:
        """OWLv2 pads to a square of the longest side, then resizes that to ``input_side``."""
        return self.input_side / max(height, width)

    def shrunk(self, image: np.ndarray) -> Image.Image:
        """The image with its longest side at most the model's input side.

        OWLv2's processor pads to a square of the longest side in float before
        resizing: a 4000x3000 photo became a 4000x4000 float array and a slow
        resize (157 s, 3.7 GB), a 20000x10 strip a 28 GB allocation. Shrinking
        first (keeping the aspect ratio) gives the model the same input; boxes
        come back in the original pixels because post-processing scales by the
        original size.
        """
        picture = Image.fromarray(image)
        height, width = image.shape[:2]
        if max(height, width) <= self.input_side:
            return picture
        scale = self.input_side / max(height, width)
        return picture.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)

    def validate_phrases(self, phrases: Sequence[str]) -> None:
        # The processor would silently truncate a long phrase; say so instead.
        for phrase in phrases:
            length = len(self.processor.tokenizer(phrase)["input_ids"])
            if length > self.max_text_len:
                raise PromptError(
                    f"phrase {phrase!r} is too long: {length} tokens, OWL takes at most {self.max_text_len} per class"
                )

    def detect(
        self,
        images: Sequence[np.ndarray],
        phrases: Sequence[str],
        box_threshold: float = 0.1,
        text_threshold: float = 0.0,
    ) -> list[sv.Detections]:
        """``text_threshold`` is unused: OWL has one score per (box, phrase)."""
        if not images:
            return []
        self.validate_phrases(phrases)
        check_resized_shapes(images, self.resize_scale, "OWL")
        inputs = self.processor(
            text=[list(phrases)] * len(images),
            images=[self.shrunk(image) for image in images],
            return_tensors="pt",
            padding="max_length",
            max_length=self.max_text_len,
            truncation=True,
        ).to(self.device)
        with inference_context(self.device):
            outputs = self.model(**inputs)
        outputs.logits = outputs.logits.float()
        outputs.pred_boxes = outputs.pred_boxes.float()
        # The processor scales OWLv2 boxes by the padded square's side, OWL-ViT's by (h, w).
        sizes = [image.shape[:2] for image in images]
        results = self.processor.image_processor.post_process_object_detection(
            outputs, threshold=box_threshold, target_sizes=sizes
        )
        return [
            owl_detections(
                result["boxes"].cpu().numpy(),
                result["scores"].cpu().numpy(),
                result["labels"].cpu().numpy(),
                phrases,
                size,
            )
            for result, size in zip(results, sizes)
        ]
