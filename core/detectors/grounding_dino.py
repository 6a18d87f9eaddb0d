"""Grounding DINO through ``transformers`` (``GroundingDinoForObjectDetection``).

Labels are mapped back to the prompt's phrases token by token instead of being
decoded from sub-word pieces, so a detection is always labelled with a phrase
the user typed (the reference's decoding can produce merged labels such as
``"womanab"``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import supervision as sv
import torch

from ..detections import empty_detections, make_detections
from ..devices import inference_context, processor_device
from ..errors import PromptError
from ..prompts import prompt_text
from .base import check_resized_shapes

NO_PHRASE = -1


def center_to_corners(boxes: np.ndarray) -> np.ndarray:
    """``(cx, cy, w, h)`` to ``(x1, y1, x2, y2)``, in whatever units the input uses."""
    cx, cy, w, h = np.moveaxis(np.asarray(boxes, dtype=np.float32), -1, 0)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def select_detections(
    token_probs: np.ndarray,
    normalized_boxes: np.ndarray,
    token_phrase: np.ndarray,
    phrases: Sequence[str],
    image_size: tuple[int, int],
    box_threshold: float,
    text_threshold: float,
) -> sv.Detections:
    """Turn one image's raw Grounding DINO outputs into labelled pixel boxes.

    Args:
        token_probs: ``(queries, tokens)`` sigmoid of the logits over the prompt's tokens.
        normalized_boxes: ``(queries, 4)`` predicted ``(cx, cy, w, h)`` relative to the image.
        token_phrase: ``(tokens,)`` index of the phrase each token belongs to, or ``-1``
            for ``[CLS]``, ``[SEP]``, periods and padding.
        phrases: the prompt's phrases.
        image_size: ``(height, width)`` of the image the boxes are scaled to.
        box_threshold: a query is kept if its best token probability exceeds this
            (the score ``transformers`` reports).
        text_threshold: ... and if its best-matching phrase's best token exceeds this.

    Returns:
        Detections in pixel ``xyxy``, clipped to the image, labelled with the
        phrase whose tokens respond most strongly.
    """
    height, width = image_size
    token_probs = np.asarray(token_probs, dtype=np.float32)
    token_phrase = np.asarray(token_phrase)
    box_scores = token_probs.max(axis=1) if token_probs.size else np.zeros(len(token_probs), np.float32)

    # Best token probability per phrase: (queries, phrases).
    phrase_scores = np.zeros((len(token_probs), len(phrases)), dtype=np.float32)
    for phrase_index in range(len(phrases)):
        columns = token_phrase == phrase_index
        if columns.any():
            phrase_scores[:, phrase_index] = token_probs[:, columns].max(axis=1)
    best_phrase = phrase_scores.argmax(axis=1) if len(phrases) else np.zeros(len(token_probs), int)
    best_phrase_score = phrase_scores[np.arange(len(token_probs)), best_phrase] if len(phrases) else box_scores * 0

    keep = (box_scores > box_threshold) & (best_phrase_score > text_threshold)
    if not keep.any():
        return empty_detections(height, width, with_masks=False)

    xyxy = center_to_corners(np.asarray(normalized_boxes, dtype=np.float32)[keep])
    xyxy *= np.array([width, height, width, height], dtype=np.float32)
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
    order = np.argsort(-box_scores[keep], kind="stable")
    return make_detections(xyxy[order], box_scores[keep][order], best_phrase[keep][order], phrases)


@functools.lru_cache(maxsize=32)
def _token_phrase_map(tokenizer, max_text_len: int, phrases: tuple[str, ...]) -> np.ndarray:
    text = prompt_text(phrases)
    encoding = tokenizer(text, return_offsets_mapping=True)
    if len(encoding["input_ids"]) > max_text_len:
        raise PromptError(
            f"prompt is too long: {len(encoding['input_ids'])} tokens, Grounding DINO takes at most "
            f"{max_text_len}; use fewer or shorter class names"
        )
    # Character span of every phrase inside the joined text.
    spans, start = [], 0
    for phrase in phrases:
        spans.append((start, start + len(phrase)))
        start += len(phrase) + 2  # the phrase, its period and a space
    mapping = np.full(len(encoding["input_ids"]), NO_PHRASE, dtype=int)
    for token_index, (begin, end) in enumerate(encoding["offset_mapping"]):
        if end <= begin:
            continue  # special tokens carry an empty span
        for phrase_index, (phrase_begin, phrase_end) in enumerate(spans):
            if phrase_begin <= begin and end <= phrase_end:
                mapping[token_index] = phrase_index
                break
    mapping.flags.writeable = False  # shared by every call with this prompt
    return mapping


class GroundingDinoDetector:
    """Text-prompted detection with a ``transformers`` Grounding DINO checkpoint."""

    name = "grounding-dino"
    requires_prompt = True
    produces_masks = False

    def __init__(self, model: torch.nn.Module, processor, device: torch.device):
        self.model = model
        self.processor = processor
        self.device = device
        self.max_text_len = int(getattr(model.config, "max_text_len", 256))

    @classmethod
    def from_pretrained(cls, checkpoint: str, device: torch.device) -> GroundingDinoDetector:
        """Load a hub id (``IDEA-Research/grounding-dino-tiny``) or a local folder."""
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        from ..checkpoints import require_model_type

        require_model_type(checkpoint, {"grounding-dino"}, "Grounding DINO")
        processor = AutoProcessor.from_pretrained(checkpoint)
        model = AutoModelForZeroShotObjectDetection.from_pretrained(checkpoint)
        return cls(model.to(device).eval(), processor, device)

    def resize_scale(self, height: int, width: int) -> float:
        """The factor the image processor resizes by: shortest edge to ``shortest_edge``, longest at most ``longest_edge``."""
        size = self.processor.image_processor.size
        shortest, longest = size.get("shortest_edge") or 800, size.get("longest_edge") or 1333
        return min(shortest / min(height, width), longest / max(height, width))

    def token_phrase_map(self, phrases: Sequence[str]) -> np.ndarray:
        """For each token of the prompt, the index of its phrase (``-1`` for separators); read-only.

        Remembered per prompt: a bulk run asks for it on every batch, in the
        model's thread (about 0.7 ms a call).

        Raises:
            PromptError: if the prompt needs more tokens than the text encoder takes.
        """
        return _token_phrase_map(self.processor.tokenizer, self.max_text_len, tuple(phrases))

    def validate_phrases(self, phrases: Sequence[str]) -> None:
        self.token_phrase_map(phrases)

    def preprocess(self, images: Sequence[np.ndarray], phrases: Sequence[str]):
        """The model's inputs for ``images`` and the prompt (host side), ready for :meth:`detect`.

        Separate so that a pipeline can prepare the next batch while the
        accelerator runs this one.
        """
        check_resized_shapes(images, self.resize_scale, "Grounding DINO")
        # Arrays, not PIL images: the torchvision processor converts them without PIL's copy (the same
        # pixel_values); on a GPU it resizes and normalises there (processor_device). The layout is
        # given: a 1x1 or 3-pixel-wide image would otherwise be read as channels-first.
        return self.processor(
            images=list(images),
            text=[prompt_text(phrases)] * len(images),
            return_tensors="pt",
            input_data_format="channels_last",
            **processor_device(self.processor.image_processor, self.device),
        )

    def detect(
        self,
        images: Sequence[np.ndarray],
        phrases: Sequence[str],
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        inputs=None,
    ) -> list[sv.Detections]:
        """Boxes for what ``phrases`` name in each image (``inputs``: their :meth:`preprocess`, if done ahead)."""
        if not images:
            return []
        if inputs is None:
            check_resized_shapes(images, self.resize_scale, "Grounding DINO")
        token_phrase = self.token_phrase_map(phrases)
        if inputs is None:
            inputs = self.preprocess(images, phrases)
        inputs = inputs.to(self.device)
        with inference_context(self.device):
            outputs = self.model(**inputs)
        num_tokens = inputs["input_ids"].shape[1]
        token_probs = outputs.logits[:, :, :num_tokens].float().sigmoid().cpu().numpy()
        boxes = outputs.pred_boxes.float().cpu().numpy()
        return [
            select_detections(
                token_probs[i], boxes[i], token_phrase, phrases, image.shape[:2], box_threshold, text_threshold
            )
            for i, image in enumerate(images)
        ]
