"""A run: a :class:`~.spec.RunSpec`'s models, loaded once, and the work they do.

Adapters build a spec, call :meth:`RunSpec.load` and then only hand media in
and take results out: labelling a batch of images (:meth:`Run.label_images`,
with its preparation steps for the engine), auto-labelling
(:meth:`Run.auto_label`) and tracking a video (:meth:`Run.track`, where the
choice between the detector + SAM 2 pipeline and SAM 3 lives, once).

Models load on first use and are cached per process (:mod:`.models`), so a
run that never tracks never loads a tracker, and two runs of one spec share
their weights. :meth:`Run.load_for_images` / :meth:`Run.load_for_video`
load everything a kind of work needs up front, so that a bad checkpoint is
a usage error before any work starts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import supervision as sv
from PIL import Image

from . import pipeline
from .autolabel import CaptionedDetections, auto_label
from .detectors import Detector
from .detectors.base import detector_phrases
from .images import as_rgb_array
from .backends import load_detector, load_sam3_tracker, load_segmenter, load_tracker
from .pipeline import PreparedBatch, default_batch_size, preparation_steps
from .prompts import parse_prompt
from .spec import (
    DEFAULT_BOX_THRESHOLD,
    DEFAULT_DETECTOR,
    DEFAULT_SEGMENTER,
    DEFAULT_TEXT_THRESHOLD,
    RunSpec,
    SettingError,
)
from .video_pipeline import FrameResult, ground_and_track

#: The models a run holds, which a caller may hand in already loaded (``Run(spec, detector=...)``).
MODEL_ROLES = ("detector", "segmenter", "image_segmenter", "video_tracker", "sam3_tracker")


class Run:
    """The models of one :class:`~.spec.RunSpec` and the work they do.

    Example:
        >>> run = Run(RunSpec.build(prompt="car. person.", device="cpu"))  # doctest: +SKIP
        >>> [detections] = run.label_images([image])  # doctest: +SKIP
    """

    def __init__(self, spec: RunSpec, **loaded: Any):
        """``loaded``: models already in memory for some roles (:data:`MODEL_ROLES`); the others load by name."""
        unknown = sorted(set(loaded) - set(MODEL_ROLES))
        if unknown:
            raise TypeError(f"Run() got models for unknown roles: {', '.join(unknown)}")
        self.spec = spec.check()
        self.__dict__.update(loaded)  # what functools.cached_property would have stored

    # ------------------------------------------------------------------ models

    @functools.cached_property
    def detector(self) -> Detector:
        """The detector with the spec's task, slicing and token (Florence-2 grounds captions when auto-labelling)."""
        spec = self.spec
        task = "phrase_grounding" if spec.caption_task is not None else spec.task
        return load_detector(
            spec.detector,
            device=spec.device,
            task=task,
            slice_size=spec.slice_size,
            slice_overlap=spec.slice_overlap,
            api_token=spec.api_token,
        )

    @functools.cached_property
    def segmenter(self):
        """SAM 2's image model, or ``None`` where the detector makes its own masks (SAM 3)."""
        return None if self.detector.produces_masks else self.image_segmenter

    @functools.cached_property
    def image_segmenter(self):
        """SAM 2's image model whatever the detector, for work that brings its own boxes or clicks (segment_with_sam2,
        CVAT's interactor): no detector loads. A segmenter handed in (``Run(spec, segmenter=...)``) is the one used."""
        if self.__dict__.get("segmenter") is not None:
            return self.__dict__["segmenter"]
        return load_segmenter(self.spec.segmenter, device=self.spec.device)

    @functools.cached_property
    def video_tracker(self):
        """The box/mask-prompted video tracker (SAM 2) that follows the detector's objects."""
        return load_tracker(self.spec.tracker, device=self.spec.device)

    @functools.cached_property
    def sam3_tracker(self):
        """SAM 3's video model, which finds and follows the prompt's objects by itself."""
        return load_sam3_tracker(self.spec.tracker, device=self.spec.device)

    @functools.cached_property
    def batch_size(self) -> int:
        """Images per forward pass: the spec's, or 4 on CUDA and 1 elsewhere."""
        return self.spec.batch_size or default_batch_size(getattr(self.detector, "device", None))

    def load_for_images(self, check_prompt: bool = False) -> Run:
        """Load (and compile, if asked) what labelling images needs; errors here are usage errors.

        ``check_prompt``: the spec's prompt is the run's (the CLI), so a prompt the detector
        cannot take, or none where one is needed, fails before SAM 2 loads. Adapters whose
        prompt comes per call (CVAT labels, a sample's classes) leave it off.
        """
        if check_prompt:
            self.phrases()  # loads the detector only
        self.segmenter  # noqa: B018 - loads the detector, then SAM 2 where it is needed
        if self.spec.compile:
            self.compile_segmenter()
        return self

    def load_for_video(self, check_prompt: bool = False) -> Run:
        """Load what tracking needs; errors here are usage errors.

        SAM 3 always checks the spec's prompt here (it is its only input). With a detector the
        prompt may come per video (``track(prompt=...)``); ``check_prompt`` checks the spec's
        before SAM 2 loads, as :meth:`load_for_images` does.
        """
        self.spec.check_for_video()
        if self.spec.tracks_with_sam3:
            self.sam3_tracker.check_phrases(self._sam3_phrases(None))
        else:
            if check_prompt:
                self.phrases()  # loads the detector only
            self.segmenter  # noqa: B018
            self.video_tracker  # noqa: B018
        return self

    def _sam3_phrases(self, prompt: str | Sequence[str] | None) -> list[str]:
        return parse_prompt(prompt if prompt is not None else list(self.spec.prompt or ()) or "")

    def compile_segmenter(self) -> None:
        """Compile SAM 2's image encoder for this run's batch size (``compile``)."""
        if self.segmenter is None or not hasattr(self.segmenter, "compile_encoder"):
            raise SettingError(
                "compile",
                True,
                "compiles the image encoder of a transformers SAM 2 checkpoint; this run has none "
                "(SAM 3 makes its own masks, and original .pt checkpoints are not compiled)",
            )
        self.segmenter.compile_encoder(self.batch_size)

    # ------------------------------------------------------------------ images

    def phrases(self, prompt: str | Sequence[str] | None = None) -> list[str]:
        """The phrases the detector gets: ``prompt`` if given (CVAT labels, a sample's classes), else the spec's."""
        return detector_phrases(self.detector, prompt if prompt is not None else self.spec.prompt)

    def preparation_steps(self, prompt: str | Sequence[str] | None = None) -> list[Callable[[Sequence[np.ndarray]], Any]]:
        """The processors' work on a batch, for the engine to run ahead of the models."""
        return preparation_steps(self.phrases(prompt), self.detector, self.segmenter)

    def label_images(
        self,
        images: Sequence[np.ndarray],
        prompt: str | Sequence[str] | None = None,
        prepared: PreparedBatch | Sequence[Any] | None = None,
        compact_masks: bool = True,
        defer_masks: bool = False,
    ) -> list[sv.Detections]:
        """Detect and segment in every image (:func:`~.pipeline.ground_and_segment`) with the spec's settings.

        ``prepared`` is what :meth:`preparation_steps` made for these images (one batch).
        """
        spec = self.spec
        if prepared is not None and not isinstance(prepared, PreparedBatch):
            prepared = PreparedBatch(*prepared)
        return pipeline.ground_and_segment(
            images,
            self.phrases(prompt),
            detector=self.detector,
            segmenter=self.segmenter,
            box_threshold=spec.box_threshold,
            text_threshold=spec.text_threshold,
            batch_size=self.batch_size,
            prepared=prepared,
            compact_masks=compact_masks,
            defer_masks=defer_masks,
        )

    def auto_label(self, images: Sequence[np.ndarray], compact_masks: bool = True) -> list[CaptionedDetections]:
        """Caption, ground the caption's phrases, segment (:func:`~.autolabel.auto_label`)."""
        return auto_label(
            images,
            self.detector,
            self.segmenter,
            caption_task=self.spec.caption_task or "more_detailed_caption",
            batch_size=self.batch_size,
            compact_masks=compact_masks,
        )

    # ------------------------------------------------------------------ video

    def track(
        self,
        frames: Iterable[tuple[int, np.ndarray]],
        prompt: str | Sequence[str] | None = None,
        keep_frames: bool = False,
    ) -> Iterator[FrameResult]:
        """Track the prompt's objects through ``(frame_index, rgb)`` frames with stable ids, one result per frame.

        With a SAM 3 tracker, SAM 3 finds and follows the objects itself;
        otherwise the detector runs every ``step`` frames and SAM 2 follows
        what it found (:func:`~.video_pipeline.ground_and_track`). Phrases are
        checked here, before the first frame is read.
        """
        spec = self.spec.check_for_video()
        if spec.tracks_with_sam3:
            phrases = self._sam3_phrases(prompt)
            session = self.sam3_tracker.start(phrases, **({"end_after": spec.end_after} if spec.end_after else {}))
            return session.track(frames, spec.box_threshold, keep_frames=keep_frames)
        return ground_and_track(
            frames,
            self.phrases(prompt),
            self.detector,
            self.segmenter,
            self.video_tracker,
            keep_frames=keep_frames,
            **self.tracking_options(),
        )

    def tracking_options(self) -> dict[str, Any]:
        """The spec's options for :class:`~.video_pipeline.GroundedTracker`."""
        spec = self.spec
        return {
            "step": spec.step,
            "iou_threshold": spec.iou_threshold,
            "prompt_type": spec.prompt_type,
            "box_threshold": spec.box_threshold,
            "text_threshold": spec.text_threshold,
            "reverse": spec.reverse,
            "end_after": spec.end_after,
        }


def ground_and_segment(
    images: Sequence[np.ndarray | Image.Image],
    prompt: str | Sequence[str] | None,
    detector: Detector | str = DEFAULT_DETECTOR,
    segmenter: Any | str | None = DEFAULT_SEGMENTER,
    box_threshold: float = DEFAULT_BOX_THRESHOLD,
    text_threshold: float = DEFAULT_TEXT_THRESHOLD,
    batch_size: int | None = None,
    device: str = "auto",
    prepared: PreparedBatch | None = None,
    compact_masks: bool = False,
    defer_masks: bool = False,
) -> list[sv.Detections]:
    """Detect what ``prompt`` names in every image and segment it with SAM 2: the one-call convenience.

    Models may be named (``detector="florence2"``, ``segmenter="large"``: they
    load once per process, through a :class:`~.spec.RunSpec`) or handed in
    loaded. The other arguments and the result are those of
    :func:`~.pipeline.ground_and_segment`.

    Example:
        >>> from gsam2.core import ground_and_segment, load_image  # doctest: +SKIP
        >>> [found] = ground_and_segment([load_image("street.jpg")], "car. person.")  # doctest: +SKIP
    """
    spec = RunSpec.build(
        detector=detector if isinstance(detector, str) else None,
        segmenter=segmenter if isinstance(segmenter, str) else None,
        box_threshold=box_threshold,
        text_threshold=text_threshold,
        batch_size=batch_size,
        device=device,
    )
    loaded = {role: model for role, model in (("detector", detector), ("segmenter", segmenter)) if not isinstance(model, str)}
    run = Run(spec, **loaded)
    arrays = [as_rgb_array(image) for image in images]
    return run.label_images(arrays, prompt, prepared, compact_masks=compact_masks, defer_masks=defer_masks)
