"""SAM 3 through ``transformers`` (``Sam3Model``): a text prompt straight to instance masks.

SAM 3 takes one noun phrase per prompt, so every phrase is its own prompt. One
call runs the vision backbone once per image and the text encoder once per
phrase, then the detector and mask heads on every (image, phrase) pair in
batches that reuse those features (``Sam3Model`` accepts precomputed
``vision_embeds`` and ``text_embeds``). Masks come out with the boxes, so the
pipelines skip SAM 2 (``produces_masks = True``).

A detection's score is SAM 3's: the query's probability times the prompt's
presence probability (what ``Sam3Processor.post_process_instance_segmentation``
reports). ``box_threshold`` filters it; ``text_threshold`` is unused.
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

DEFAULT_CHECKPOINT = "facebook/sam3"
MASK_THRESHOLD = 0.5
# Sam3Processor pads every prompt to exactly 32 tokens and never truncates, so a
# longer one would break the batch (or the text encoder's 32 positions) deep inside.
PROCESSOR_TEXT_LENGTH = 32
# Full-size masks are upsampled this many at a time: a 4K image at threshold 0 has
# 200 candidates per phrase, which would be gigabytes if done at once.
MASKS_PER_UPSAMPLE = 16


def max_phrase_tokens(text_config) -> int:
    """Tokens a SAM 3 phrase may have: the processor's fixed padding, or fewer if the text encoder is shorter."""
    positions = int(getattr(text_config, "max_position_embeddings", PROCESSOR_TEXT_LENGTH))
    return min(positions, PROCESSOR_TEXT_LENGTH)


def pair_instances(
    pred_logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    pred_masks: torch.Tensor,
    presence_logit: torch.Tensor | None,
    image_size: tuple[int, int],
    threshold: float,
    mask_threshold: float = MASK_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One (image, phrase) pair's raw outputs as kept scores, pixel boxes and full-size masks.

    The maths of ``Sam3Processor.post_process_instance_segmentation`` (score =
    ``sigmoid(logit) * sigmoid(presence)``, kept if ``> threshold``; mask
    probabilities upsampled bilinearly, kept where ``> mask_threshold``), but
    masks are made ``bool`` a few at a time instead of ``int64`` all at once.

    Args:
        pred_logits: ``(queries,)`` query logits.
        pred_boxes: ``(queries, 4)`` boxes as ``xyxy`` relative to the image.
        pred_masks: ``(queries, h, w)`` low-resolution mask logits.
        presence_logit: ``(1,)`` the prompt's presence logit, or ``None``.
        image_size: ``(height, width)`` of the original image.

    Returns:
        ``scores`` ``(n,)`` float32, ``boxes`` ``(n, 4)`` float32 pixel ``xyxy``
        (not clipped), ``masks`` ``(n, height, width)`` bool.
    """
    height, width = image_size
    scores = pred_logits.float().sigmoid()
    if presence_logit is not None:
        scores = scores * presence_logit.float().sigmoid()
    keep = scores > threshold
    boxes = pred_boxes.float()[keep] * torch.tensor([width, height, width, height], device=pred_boxes.device)
    probabilities = pred_masks[keep].float().sigmoid()
    masks = np.zeros((len(probabilities), height, width), dtype=bool)
    for start in range(0, len(probabilities), MASKS_PER_UPSAMPLE):
        chunk = probabilities[start : start + MASKS_PER_UPSAMPLE]
        upsampled = torch.nn.functional.interpolate(
            chunk.unsqueeze(0), size=(height, width), mode="bilinear", align_corners=False
        )[0]
        masks[start : start + len(chunk)] = (upsampled > mask_threshold).cpu().numpy()
    return scores[keep].cpu().numpy().astype(np.float32), boxes.cpu().numpy().astype(np.float32), masks


def sam3_detections(
    instances: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    phrases: Sequence[str],
    image_size: tuple[int, int],
) -> sv.Detections:
    """One image's per-phrase instances as detections sorted by score.

    Args:
        instances: for each phrase, in order, its ``(scores, pixel xyxy boxes, bool masks)``
            as :func:`pair_instances` returns them.
        phrases: the prompt's phrases; ``class_id`` is the index of the phrase that found it.
        image_size: ``(height, width)``: boxes are clipped to it, masks must have it.
    """
    height, width = image_size
    class_ids = np.concatenate(
        [np.full(len(scores), index, dtype=int) for index, (scores, _, _) in enumerate(instances)]
    )
    if not len(class_ids):
        return empty_detections(height, width, with_masks=True)
    scores = np.concatenate([np.asarray(scores, dtype=np.float32) for scores, _, _ in instances])
    xyxy = np.concatenate([np.asarray(boxes, dtype=np.float32).reshape(-1, 4) for _, boxes, _ in instances])
    masks = np.concatenate([np.asarray(masks, dtype=bool).reshape(-1, height, width) for _, _, masks in instances])
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
    order = np.argsort(-scores, kind="stable")
    detections = make_detections(xyxy[order], scores[order], class_ids[order], phrases)
    detections.mask = masks[order]
    return detections


class Sam3Detector:
    """Text-prompted instance segmentation with a ``transformers`` SAM 3 checkpoint."""

    name = "sam3"
    requires_prompt = True
    produces_masks = True

    def __init__(self, model: torch.nn.Module, processor, device: torch.device, pairs_per_forward: int = 16):
        """``pairs_per_forward``: (image, phrase) pairs per pass of the detector and mask heads.

        Each pair carries its own copy of the image's multi-scale features through
        the mask decoder (the finest is 256 x 288 x 288 for ``facebook/sam3``), so
        this bounds memory for many images times many phrases.
        """
        self.model = model
        self.processor = processor
        self.device = device
        self.pairs_per_forward = max(1, int(pairs_per_forward))
        self.max_text_len = max_phrase_tokens(model.config.text_config)

    @classmethod
    def from_pretrained(cls, checkpoint: str, device: torch.device) -> Sam3Detector:
        """Load a hub id (``facebook/sam3``) or a local folder."""
        from transformers import Sam3Model, Sam3Processor

        # Not AutoModel: facebook/sam3's config is the video model's, and Sam3Model
        # reads its detector part (dropping the tracker's weights).
        processor = Sam3Processor.from_pretrained(checkpoint)
        model = Sam3Model.from_pretrained(checkpoint)
        return cls(model.to(device).eval(), processor, device)

    def validate_phrases(self, phrases: Sequence[str]) -> None:
        for phrase in phrases:
            length = len(self.processor.tokenizer(phrase)["input_ids"])
            if length > self.max_text_len:
                raise PromptError(
                    f"phrase {phrase!r} is too long: {length} tokens long with start and end tokens, SAM 3 takes "
                    f"at most {self.max_text_len} per class; use a shorter noun phrase"
                )

    def detect(
        self,
        images: Sequence[np.ndarray],
        phrases: Sequence[str],
        box_threshold: float = 0.5,
        text_threshold: float = 0.0,
    ) -> list[sv.Detections]:
        """``box_threshold`` is SAM 3's score threshold; ``text_threshold`` is unused."""
        if not images:
            return []
        sizes = [image.shape[:2] for image in images]
        if not phrases:
            return [empty_detections(height, width, with_masks=True) for height, width in sizes]
        self.validate_phrases(phrases)
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        pixel_values = self.processor(images=[Image.fromarray(image) for image in images], return_tensors="pt")[
            "pixel_values"
        ].to(self.device)
        text = self.processor(text=list(phrases), return_tensors="pt").to(self.device)
        pairs = [(i, j) for i in range(len(images)) for j in range(len(phrases))]
        instances: list[list] = [[None] * len(phrases) for _ in images]
        with inference_context(self.device):
            vision = self.model.get_vision_features(pixel_values=pixel_values)
            text_features = self.model.get_text_features(
                input_ids=text["input_ids"], attention_mask=text["attention_mask"]
            ).pooler_output
        for start in range(0, len(pairs), self.pairs_per_forward):
            chunk = pairs[start : start + self.pairs_per_forward]
            image_index = torch.tensor([i for i, _ in chunk], device=self.device)
            phrase_index = torch.tensor([j for _, j in chunk], device=self.device)
            with inference_context(self.device):
                outputs = self.model(
                    vision_embeds=Sam3VisionEncoderOutput(
                        fpn_hidden_states=tuple(level[image_index] for level in vision.fpn_hidden_states),
                        fpn_position_encoding=tuple(level[image_index] for level in vision.fpn_position_encoding),
                    ),
                    text_embeds=BaseModelOutputWithPooling(pooler_output=text_features[phrase_index]),
                    attention_mask=text["attention_mask"][phrase_index],
                )
            # Thresholding and upsampling in float32, outside autocast.
            with torch.inference_mode():
                for row, (i, j) in enumerate(chunk):
                    presence = outputs.presence_logits[row] if outputs.presence_logits is not None else None
                    instances[i][j] = pair_instances(
                        outputs.pred_logits[row],
                        outputs.pred_boxes[row],
                        outputs.pred_masks[row],
                        presence,
                        sizes[i],
                        box_threshold,
                    )
            del outputs
        return [sam3_detections(instances[i], phrases, sizes[i]) for i in range(len(images))]
