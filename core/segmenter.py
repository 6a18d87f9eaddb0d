"""SAM 2 image segmentation through ``transformers`` (``Sam2Model`` + ``Sam2Processor``).

The image encoder is the expensive part, so it runs once per image (and over
a whole batch of images in one forward pass); every box or click on that image
then only runs the light prompt encoder and mask decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import supervision as sv
import torch

from .devices import inference_context, processor_device
from .masks import PendingMasks, dense_masks

# Boxes per decoder call: bounds the memory of the full-resolution masks.
MAX_PROMPTS_PER_CALL = 64


@dataclass
class ImageEmbedding:
    """SAM 2's encoding of one image: reusable for any number of prompts."""

    features: list[torch.Tensor]
    height: int
    width: int


class Sam2ImageSegmenter:
    """Boxes (or points) in, one full-frame boolean mask per prompt out."""

    name = "sam2"

    def __init__(self, model: torch.nn.Module, processor, device: torch.device):
        self.model = model
        self.processor = processor
        self.device = device
        self.compiled_batch = 0  # the batch size the image encoder is compiled for (compile_encoder)

    def compile_encoder(self, batch_size: int) -> None:
        """Compile the image encoder with ``torch.compile`` for batches of ``batch_size`` (``--compile``).

        What the SAM 2 repository offers as ``compile_image_encoder``: the Hiera
        encoder is the segmenter's heavy part and has static shapes (1024 px
        inputs). Compiled once per input shape, so smaller batches (the last one
        of a run) are padded to ``batch_size`` instead of compiling again. The
        first batch waits for the compilation (45 s for the tiny test model on a
        2-core CPU; bench/README.md).
        """
        self.model.vision_encoder.compile(dynamic=False)
        self.compiled_batch = batch_size

    @classmethod
    def from_pretrained(cls, checkpoint: str, device: torch.device) -> Sam2ImageSegmenter:
        """Load a hub id (``facebook/sam2.1-hiera-tiny``) or a local folder."""
        from transformers import Sam2Model, Sam2Processor

        from .checkpoints import require_model_type

        require_model_type(checkpoint, {"sam2", "sam2_video"}, "SAM 2")
        processor = Sam2Processor.from_pretrained(checkpoint)
        model = Sam2Model.from_pretrained(checkpoint)
        return cls(model.to(device).eval(), processor, device)

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The encoder's input for RGB ``uint8`` images: resized and normalised (host side; pinned for CUDA).

        Separate from :meth:`embed` so that a pipeline can prepare the next batch
        while the accelerator encodes this one.
        """
        on_device = processor_device(self.processor.image_processor, self.device)  # resized on the GPU if any
        pixel_values = self.processor(
            images=list(images), return_tensors="pt", input_data_format="channels_last", **on_device
        )["pixel_values"]  # the layout given: a 1x1 image would otherwise be read as channels-first
        if self.device.type == "cuda" and pixel_values.device.type == "cpu":
            pixel_values = pixel_values.pin_memory()  # a PIL processor: copy asynchronously
        return pixel_values

    def embed(self, images: Sequence[np.ndarray], pixel_values: torch.Tensor | None = None) -> list[ImageEmbedding]:
        """Encode a batch of RGB ``uint8`` images in one forward pass (``pixel_values``: their :meth:`preprocess`)."""
        if not images:
            return []
        if pixel_values is None:
            pixel_values = self.preprocess(images)
        pixel_values = pixel_values.to(self.device, non_blocking=True)
        batch = pixel_values.shape[0]
        if batch < self.compiled_batch:  # one shape for the compiled encoder: pad rather than compile again
            padding = pixel_values.new_zeros((self.compiled_batch - batch, *pixel_values.shape[1:]))
            pixel_values = torch.cat([pixel_values, padding])
        with inference_context(self.device):
            features = self.model.get_image_embeddings(pixel_values)
        return [
            ImageEmbedding([level[i : i + 1] for level in features], image.shape[0], image.shape[1])
            for i, image in enumerate(images)
        ]

    def segment_boxes(
        self, embedding: ImageEmbedding, boxes: np.ndarray, compact: bool = False, defer: bool = False
    ) -> tuple[np.ndarray | sv.CompactMask | PendingMasks, np.ndarray]:
        """One mask per pixel ``xyxy`` box, and ``(N,)`` predicted IoU scores.

        Masks are ``(N, H, W)`` bool, or with ``compact=True`` a
        ``supervision.CompactMask`` of the same pixels, upsampled only where each
        mask can be and never materialised as full frames (:mod:`.masks`). With
        ``defer=True`` they are :class:`~.masks.PendingMasks`: the logits, left on
        the device for another thread to turn into the CompactMask.
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        as_logits = compact or defer
        results = [
            self._decode(
                embedding,
                as_logits=as_logits,
                prompt_tensors={"input_boxes": self.box_prompts(chunk, embedding.height, embedding.width)},
            )
            for chunk in np.split(boxes, range(MAX_PROMPTS_PER_CALL, len(boxes), MAX_PROMPTS_PER_CALL))
            if len(chunk)
        ]
        scores = np.concatenate([r[1][:, 0] for r in results]) if results else np.zeros((0,), np.float32)
        if as_logits:
            if not results:
                logits = torch.zeros(0, 1, 1)
            elif len(results) == 1:  # up to 64 boxes: no copy (torch.cat copies even one tensor)
                logits = results[0][0]
            else:
                logits = torch.cat([r[0] for r in results])
            pending = PendingMasks(logits, embedding.height, embedding.width)
            return (pending if defer else pending.compact()), scores
        if not results:
            return np.zeros((0, embedding.height, embedding.width), bool), scores
        return np.concatenate([r[0][:, 0] for r in results]), scores

    def box_prompts(self, boxes: np.ndarray, height: int, width: int) -> torch.Tensor:
        """``(1, N, 4)`` float32: what ``Sam2Processor(input_boxes=[boxes], original_sizes=[[height, width]])`` gives.

        The same operations as transformers' ``Sam2Processor._normalize_coordinates``
        (x times ``target_size / width``, y times ``target_size / height``, in
        float32), so the same bits (tests/test_masks.py checks it), without
        the processor's validation of nested lists: about 1.6 ms per call in the
        model's thread, between two decoder calls (bench/simulated_accelerator.py).
        """
        target = self.processor.target_size
        corners = torch.from_numpy(np.array(boxes, dtype=np.float32).reshape(-1, 2, 2))
        corners[..., 0] = corners[..., 0] * (target / width)
        corners[..., 1] = corners[..., 1] * (target / height)
        return corners.reshape(1, -1, 4)

    def segment_points(
        self,
        embedding: ImageEmbedding,
        points: np.ndarray,
        labels: np.ndarray,
        box: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float]:
        """One mask for one object from clicks (label 1 = positive, 0 = negative) and an optional box."""
        masks, scores = self.segment_prompt(embedding, points, labels, box)
        return masks[0], float(scores[0])

    def segment_prompt(
        self,
        embedding: ImageEmbedding,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None = None,
        multimask: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks of one object from clicks and/or a box: ``(K, H, W)`` bool and ``(K,)`` predicted IoUs.

        ``K`` is 1, or SAM 2's 3 alternative masks with ``multimask=True`` (for
        an ambiguous prompt, or when the single answer is empty).
        """
        kwargs = {}
        if points is not None and len(points):
            kwargs["input_points"] = [[np.asarray(points, dtype=np.float32).reshape(-1, 2).tolist()]]
            kwargs["input_labels"] = [[np.asarray(labels, dtype=int).reshape(-1).tolist()]]
        if box is not None:
            kwargs["input_boxes"] = [[np.asarray(box, dtype=np.float32).reshape(4).tolist()]]
        if not kwargs:
            raise ValueError("segment_prompt needs points or a box")
        masks, scores = self._decode(embedding, multimask=multimask, **kwargs)
        return masks[0], scores[0]

    def _decode(
        self,
        embedding: ImageEmbedding,
        multimask: bool = False,
        as_logits: bool = False,
        prompt_tensors: dict[str, torch.Tensor] | None = None,
        **prompts,
    ) -> tuple[np.ndarray | torch.Tensor, np.ndarray]:
        """``(N, K, H, W)`` masks and ``(N, K)`` scores for N prompts; K = 3 with ``multimask``, else 1.

        ``prompts`` (lists, in pixels) go through the processor; ``prompt_tensors``
        are the model's inputs already (:meth:`box_prompts`). With ``as_logits``
        (K = 1), the ``(N, h, w)`` low-resolution logits instead of masks, left
        where they are (:class:`~.masks.PendingMasks` turns them into masks).
        """
        if prompt_tensors is None:
            original_sizes = [[embedding.height, embedding.width]]
            inputs = self.processor(original_sizes=original_sizes, return_tensors="pt", **prompts)
            prompt_tensors = {
                key: value for key, value in inputs.items() if key in ("input_points", "input_labels", "input_boxes")
            }
        prompt_tensors = {key: value.to(self.device) for key, value in prompt_tensors.items()}
        with inference_context(self.device):
            outputs = self.model(image_embeddings=embedding.features, multimask_output=multimask, **prompt_tensors)
        # Upsample and threshold where the logits are (the GPU when there is one), and only over each
        # mask's support: what transformers' post_process_masks computes (a bilinear F.interpolate to the
        # image size, > 0) without N full frames of floats (core/masks.py). Only bool crops reach the host.
        logits = outputs.pred_masks[0].float()  # (N, K, 256, 256)
        count, k = logits.shape[:2]
        scores = outputs.iou_scores.float().cpu().numpy().reshape(count, k)
        if as_logits:
            return logits[:, 0], scores
        flat = dense_masks(logits.flatten(0, 1), embedding.height, embedding.width)
        return flat.reshape(count, k, embedding.height, embedding.width), scores
