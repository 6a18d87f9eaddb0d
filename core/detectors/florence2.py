"""Florence-2 through ``transformers`` (``Florence2ForConditionalGeneration``, no remote code).

Florence-2 is a sequence-to-sequence model: every task is a task token
(``<OD>``, ``<CAPTION_TO_PHRASE_GROUNDING>``, ...) that the processor turns
into an instruction, and every answer is text in which ``<loc_0>`` ...
``<loc_999>`` tokens quantise coordinates; the processor's
``post_process_generation`` parses it into pixel boxes or polygons. This module
turns those parsed answers into ``sv.Detections`` (:func:`parsed_to_detections`,
a pure function) and runs the model (:class:`Florence2`, shared by every task,
and :class:`Florence2Detector`, one task).

transformers' parser rounds every coordinate down to a whole pixel (the
original remote code kept fractions), so a box can be up to a pixel smaller
and a small region in a small image can come out with zero width.

Florence-2 generates no scores, so every detection gets confidence 1.0 and the
pipelines' thresholds do nothing here: what it wrote down is what it found.
Masks are left to SAM 2, as in the reference demos (referring-expression
polygons are reduced to their bounding box).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import supervision as sv
import torch
from PIL import Image

from ..detections import empty_detections, make_detections
from ..devices import inference_context
from ..errors import InputError, ModelLoadError, PromptError
from ..prompts import prompt_text

#: Our task names -> Florence-2's task tokens, for the tasks that find regions.
FLORENCE2_TASKS = {
    "object_detection": "<OD>",
    "dense_region_caption": "<DENSE_REGION_CAPTION>",
    "region_proposal": "<REGION_PROPOSAL>",
    "phrase_grounding": "<CAPTION_TO_PHRASE_GROUNDING>",
    "referring_expression_segmentation": "<REFERRING_EXPRESSION_SEGMENTATION>",
    "open_vocabulary_detection": "<OPEN_VOCABULARY_DETECTION>",
}

#: Our caption names -> Florence-2's captioning task tokens.
CAPTION_TASKS = {
    "caption": "<CAPTION>",
    "detailed_caption": "<DETAILED_CAPTION>",
    "more_detailed_caption": "<MORE_DETAILED_CAPTION>",
}

#: Tasks that take the user's text; the others name what they find themselves.
PROMPTED_TASKS = frozenset({"phrase_grounding", "referring_expression_segmentation", "open_vocabulary_detection"})

#: Class name of regions Florence-2 leaves unnamed (region proposals).
REGION_LABEL = "region"

#: How the reference joins several classes for open-vocabulary detection ("car <and> building").
OPEN_VOCABULARY_SEPARATOR = " <and> "

#: The original hub repositories hold remote code whose weights the native class cannot
#: read; transformers' converted copies of them live under florence-community.
NATIVE_CHECKPOINTS = {
    "microsoft/Florence-2-base": "florence-community/Florence-2-base",
    "microsoft/Florence-2-large": "florence-community/Florence-2-large",
}

# Words that say nothing about which phrase a label belongs to.
_STOPWORDS = frozenset({"a", "an", "the", "of", "and", "in", "on", "with", "at", "to"})
_WHITESPACE = re.compile(r"\s+")


def task_token(task: str, tasks: Mapping[str, str] = FLORENCE2_TASKS) -> str:
    """The Florence-2 task token of ``task``.

    Raises:
        InputError: if ``task`` is not one of ``tasks``.
    """
    if task not in tasks:
        raise InputError(f"unknown Florence-2 task {task!r}: choose one of {', '.join(tasks)}")
    return tasks[task]


def clean_label(label: str) -> str:
    """A label as a class name: lower case, single spaces, no surrounding periods.

    transformers' parser takes a label to be the text before a run of location
    tokens, starting after the last ``<``; when another special token comes
    first (``car <and> bus<loc_1>...``) the label starts with that token's tail
    (``"and> bus"``), which is cut off here: no real label holds a ``>``.
    """
    label = str(label).rsplit(">", 1)[-1]
    return _WHITESPACE.sub(" ", label).strip().strip(".").strip().lower()


def polygons_box(polygons: Sequence[Sequence[float]]) -> np.ndarray | None:
    """The ``(x1, y1, x2, y2)`` box around one instance's polygons (flat ``x, y, x, y, ...`` lists).

    ``None`` when they hold fewer than 3 points: no area to segment (the reference skips those too).
    """
    coords = [np.asarray(polygon, dtype=np.float32).reshape(-1)[: len(polygon) // 2 * 2] for polygon in polygons]
    points = np.concatenate(coords).reshape(-1, 2) if coords else np.zeros((0, 2), np.float32)
    if len(points) < 3:
        return None
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float32)


def florence_regions(answer: Mapping[str, Any], task: str) -> tuple[np.ndarray, list[str]]:
    """The ``(n, 4)`` boxes and raw labels in one image's parsed answer to ``task``.

    ``answer`` is the value ``post_process_generation`` returns under the task
    token: ``{"bboxes", "labels"}`` for detection, dense captions, region
    proposals and phrase grounding; ``{"polygons", "labels"}`` for referring
    expressions; ``{"bboxes", "bboxes_labels", "polygons", "polygons_labels"}``
    for open-vocabulary detection (boxes, or polygons when it segments).
    """
    boxes: list[np.ndarray] = []
    labels: list[str] = []
    if task == "open_vocabulary_detection":
        box_items = zip(answer.get("bboxes", []), answer.get("bboxes_labels", []))
        polygon_items = zip(answer.get("polygons", []), answer.get("polygons_labels", []))
    elif task == "referring_expression_segmentation":
        box_items = iter(())
        polygon_items = zip(answer.get("polygons", []), answer.get("labels", []))
    else:
        box_items = zip(answer.get("bboxes", []), answer.get("labels", []))
        polygon_items = iter(())
    for box, label in box_items:
        boxes.append(np.asarray(box, dtype=np.float32).reshape(4))
        labels.append(label)
    for polygons, label in polygon_items:
        box = polygons_box(polygons)
        if box is not None:
            boxes.append(box)
            labels.append(label)
    xyxy = np.stack(boxes) if boxes else np.zeros((0, 4), dtype=np.float32)
    return xyxy, labels


def match_phrase(label: str, phrases: Sequence[str]) -> int | None:
    """The index of the prompt phrase a Florence-2 label stands for, or ``None``.

    Florence-2 echoes the classes it was asked for ("car"), or grounds a piece
    of the caption ("a dog" for "a dog. a ball."), so in order: the same text;
    the only phrase; the longest phrase inside the label; the shortest phrase
    holding the label; the phrase sharing most words.
    """
    if not phrases:
        return None
    label = clean_label(label)
    cleaned = [clean_label(phrase) for phrase in phrases]
    if label in cleaned:
        return cleaned.index(label)
    if len(phrases) == 1:
        return 0  # Florence-2 was asked about nothing else
    if label:
        padded = f" {label} "
        inside = [i for i, phrase in enumerate(cleaned) if phrase and f" {phrase} " in padded]
        if inside:
            return max(inside, key=lambda i: len(cleaned[i]))
        holding = [i for i, phrase in enumerate(cleaned) if padded in f" {phrase} "]
        if holding:
            return min(holding, key=lambda i: len(cleaned[i]))
    words = set(label.split()) - _STOPWORDS
    overlaps = [len(words & (set(phrase.split()) - _STOPWORDS)) for phrase in cleaned]
    best = max(overlaps)
    return overlaps.index(best) if best > 0 else None


def _finish(
    xyxy: np.ndarray, class_id: Sequence[int], names: Sequence[str], image_size: tuple[int, int]
) -> sv.Detections:
    """Detections with corners ordered, boxes clipped to the image and confidence 1.0 (Florence-2 has no scores)."""
    height, width = image_size
    if len(class_id) == 0:
        return empty_detections(height, width, with_masks=False)
    xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    xyxy = np.concatenate([np.minimum(xyxy[:, :2], xyxy[:, 2:]), np.maximum(xyxy[:, :2], xyxy[:, 2:])], axis=1)
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
    return make_detections(xyxy, np.ones(len(xyxy), dtype=np.float32), np.asarray(class_id, dtype=int), names)


def parsed_to_detections(
    parsed: Mapping[str, Any],
    task: str,
    phrases: Sequence[str],
    image_size: tuple[int, int],
) -> sv.Detections:
    """One image's ``post_process_generation`` result as detections.

    Args:
        parsed: what ``post_process_generation`` returned, ``{task_token: answer}``
            (the bare ``answer`` is accepted too).
        task: one of :data:`FLORENCE2_TASKS`.
        phrases: the prompt's phrases. For a prompted task each label is mapped
            to one of them (:func:`match_phrase`; labels that match none are
            dropped) and ``class_id`` indexes ``phrases``. For prompt-free tasks,
            or with no phrases, the class names are Florence-2's own labels
            (cleaned; unnamed regions are :data:`REGION_LABEL`) and ``class_id``
            indexes the image's distinct names in order of first appearance.
        image_size: ``(height, width)`` of the image (Florence-2's own ``image_size`` is ``(width, height)``).

    Returns:
        Detections in Florence-2's order, boxes in pixels clipped to the image,
        confidence 1.0, no masks.
    """
    token = task_token(task)
    answer = parsed.get(token, parsed)
    xyxy, labels = florence_regions(answer, task)
    if phrases and task in PROMPTED_TASKS:
        matches = [match_phrase(label, phrases) for label in labels]
        keep = [i for i, match in enumerate(matches) if match is not None]
        return _finish(xyxy[keep], [matches[i] for i in keep], phrases, image_size)
    names = [clean_label(label) or REGION_LABEL for label in labels]
    distinct = list(dict.fromkeys(names))
    return _finish(xyxy, [distinct.index(name) for name in names], distinct, image_size)


def referring_detections(
    parsed_per_phrase: Sequence[Mapping[str, Any]],
    phrases: Sequence[str],
    image_size: tuple[int, int],
) -> sv.Detections:
    """One image's referring-expression answers, one per phrase, as detections labelled with that phrase."""
    task = "referring_expression_segmentation"
    token = task_token(task)
    boxes, class_id = [], []
    for index, parsed in enumerate(parsed_per_phrase):
        xyxy, _ = florence_regions(parsed.get(token, parsed), task)
        boxes.append(xyxy)
        class_id.extend([index] * len(xyxy))
    xyxy = np.concatenate(boxes) if boxes else np.zeros((0, 4), dtype=np.float32)
    return _finish(xyxy, class_id, phrases, image_size)


class Florence2:
    """A Florence-2 model and its processor: generation for any task, shared by every detector and caption call."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor,
        device: torch.device,
        max_new_tokens: int = 1024,
        num_beams: int = 3,
    ):
        """``max_new_tokens`` and ``num_beams`` default to the reference demos' generation settings."""
        self.model = model
        self.processor = processor
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams

    @classmethod
    def from_pretrained(cls, checkpoint: str, device: torch.device) -> Florence2:
        """Load a hub id (``florence-community/Florence-2-large``; ``microsoft/Florence-2-large`` is
        redirected to it) or a local folder in transformers' native Florence-2 format.

        Raises:
            ModelLoadError: if the checkpoint's weights do not fit the native model
                (e.g. a remote-code checkpoint), which would otherwise run with random weights.
        """
        from transformers import AutoProcessor, Florence2ForConditionalGeneration

        checkpoint = NATIVE_CHECKPOINTS.get(checkpoint, checkpoint)
        processor = AutoProcessor.from_pretrained(checkpoint)
        model, info = Florence2ForConditionalGeneration.from_pretrained(checkpoint, output_loading_info=True)
        if info.get("missing_keys"):
            raise ModelLoadError(
                f"Florence-2 checkpoint {checkpoint!r} is not in transformers' native format "
                f"({len(info['missing_keys'])} weights missing); use a converted one such as "
                "florence-community/Florence-2-large"
            )
        return cls(model.to(device).eval(), processor, device)

    @property
    def num_image_tokens(self) -> int:
        return int(self.processor.num_image_tokens)

    def check_prompt(self, token: str, text: str) -> None:
        """Raise ``PromptError`` if ``text`` makes the encoder's input longer than the model takes."""
        positions = int(self.model.config.text_config.max_position_embeddings)
        # Without images the processor builds the instruction alone (no image, start or end tokens).
        length = len(self.processor(text=[token + text])["input_ids"][0]) + self.num_image_tokens + 2
        if length > positions:
            raise PromptError(
                f"prompt is too long for Florence-2: {length} tokens with the image's {self.num_image_tokens}, "
                f"it takes at most {positions}; use a shorter prompt"
            )

    def fit_text(self, token: str, text: str) -> str:
        """``text`` cut at a word boundary so that it fits the encoder with ``token`` and the image.

        Auto-labelling feeds a generated caption back as the grounding input; a
        rambling caption is shortened rather than failing the image.
        """
        while text:
            try:
                self.check_prompt(token, text)
                return text
            except PromptError:
                words = text.split()
                text = " ".join(words[: max(0, len(words) * 3 // 4)])  # a few tokenizer calls, not one per word
        return text

    def generate(
        self,
        images: Sequence[np.ndarray],
        token: str,
        text: str | Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Run task ``token`` on a batch of RGB ``uint8`` images; one parsed answer per image.

        ``text`` is the task's input: one string for every image, one per image,
        or ``None`` for tasks without input. Each answer is
        ``post_process_generation``'s ``{token: answer}`` with coordinates in
        pixels of that image.
        """
        if not images:
            return []
        texts = [text] * len(images) if text is None or isinstance(text, str) else list(text)
        if len(texts) != len(images):
            raise InputError(f"got {len(texts)} Florence-2 text inputs for {len(images)} images")
        inputs = self.processor(
            text=[token + (item or "") for item in texts],
            images=[Image.fromarray(image) for image in images],
            return_tensors="pt",
            padding=True,  # per-image texts (captions) differ in length
        ).to(self.device)
        with inference_context(self.device):
            generated = self.model.generate(
                input_ids=inputs["input_ids"],
                pixel_values=inputs["pixel_values"],
                attention_mask=inputs["attention_mask"],
                max_new_tokens=self.max_new_tokens,
                num_beams=self.num_beams,
                do_sample=False,
                early_stopping=False,
            )
        # Location tokens are special tokens: keep them, the parser reads them.
        answers = self.processor.batch_decode(generated, skip_special_tokens=False)
        return self.parse(answers, token, [image.shape[:2] for image in images])

    def parse(self, answers: Sequence[str], token: str, image_sizes: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
        """Parse decoded answers with the processor; ``image_sizes`` are ``(height, width)``.

        Padding is removed first: in a batch the shorter answers end in
        ``<pad>`` tokens, which the parser drops for region tasks but leaves in
        captions.
        """
        pad = self.processor.tokenizer.pad_token
        return [
            self.processor.post_process_generation(answer.replace(pad, ""), task=token, image_size=(width, height))
            for answer, (height, width) in zip(answers, image_sizes)
        ]

    def caption(self, images: Sequence[np.ndarray], task: str = "more_detailed_caption") -> list[str]:
        """One caption per image; ``task`` is one of :data:`CAPTION_TASKS`."""
        token = task_token(task, CAPTION_TASKS)
        return [str(parsed[token]).strip() for parsed in self.generate(images, token)]


class Florence2Detector:
    """One Florence-2 task as a detector.

    ``object_detection``, ``dense_region_caption`` and ``region_proposal`` take no
    prompt and name what they find; ``phrase_grounding`` grounds the prompt's
    phrases written as one caption ("a dog. a ball."); ``open_vocabulary_detection``
    looks for the phrases joined with ``<and>``; ``referring_expression_segmentation``
    runs once per phrase and boxes the polygon it returns. Thresholds are ignored:
    Florence-2 generates its answer and scores nothing.
    """

    name = "florence2"
    produces_masks = False

    def __init__(self, florence2: Florence2, task: str = "object_detection"):
        self.token = task_token(task)
        self.florence2 = florence2
        self.task = task
        self.requires_prompt = task in PROMPTED_TASKS

    @property
    def device(self) -> torch.device:
        """The model's device (the pipelines size their batches by it)."""
        return self.florence2.device

    def prompt_texts(self, phrases: Sequence[str]) -> list[str]:
        """The text inputs the task sends for ``phrases``: one per generation pass."""
        if self.task == "phrase_grounding":
            return [prompt_text(phrases)]
        if self.task == "open_vocabulary_detection":
            return [OPEN_VOCABULARY_SEPARATOR.join(phrases)]
        if self.task == "referring_expression_segmentation":
            return list(phrases)
        return []

    def validate_phrases(self, phrases: Sequence[str]) -> None:
        if not self.requires_prompt:
            return  # prompt-free tasks ignore phrases
        if not phrases:
            raise PromptError(f"Florence-2 task {self.task!r} needs a prompt: give the phrases to look for")
        for text in self.prompt_texts(phrases):
            self.florence2.check_prompt(self.token, text)

    def detect(
        self,
        images: Sequence[np.ndarray],
        phrases: Sequence[str],
        box_threshold: float = 0.0,
        text_threshold: float = 0.0,
    ) -> list[sv.Detections]:
        """``box_threshold`` and ``text_threshold`` are unused: Florence-2 gives no scores (confidence is 1.0)."""
        if not images:
            return []
        sizes = [image.shape[:2] for image in images]
        if not self.requires_prompt:
            parsed = self.florence2.generate(images, self.token)
            return [parsed_to_detections(answer, self.task, [], size) for answer, size in zip(parsed, sizes)]
        self.validate_phrases(phrases)
        if self.task == "referring_expression_segmentation":
            # One expression per pass: Florence-2 segments a single referent.
            per_phrase = [self.florence2.generate(images, self.token, phrase) for phrase in phrases]
            return [
                referring_detections([answers[i] for answers in per_phrase], phrases, size)
                for i, size in enumerate(sizes)
            ]
        [text] = self.prompt_texts(phrases)
        parsed = self.florence2.generate(images, self.token, text)
        return [parsed_to_detections(answer, self.task, phrases, size) for answer, size in zip(parsed, sizes)]

    def detect_with_caption(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> list[sv.Detections]:
        """Ground a different free-form caption in each image (caption -> phrase grounding).

        Whatever this detector's task, this is phrase grounding. Detections are
        labelled with the grounded phrase's text (lower case) and ``class_id``
        indexes the image's distinct phrases in order of first appearance. An
        empty caption gives no detections.
        """
        if len(captions) != len(images):
            raise InputError(f"got {len(captions)} captions for {len(images)} images")
        task = "phrase_grounding"
        token = task_token(task)
        captions = [_WHITESPACE.sub(" ", str(caption)).strip() for caption in captions]
        results = [empty_detections(*image.shape[:2], with_masks=False) for image in images]
        captions = [self.florence2.fit_text(token, caption) for caption in captions]
        todo = [i for i, caption in enumerate(captions) if caption]
        parsed = self.florence2.generate([images[i] for i in todo], token, [captions[i] for i in todo])
        for i, answer in zip(todo, parsed):
            results[i] = parsed_to_detections(answer, task, [], images[i].shape[:2])
        return results
