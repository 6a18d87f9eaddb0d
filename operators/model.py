"""Grounded SAM 2 as a FiftyOne model, for ``dataset.apply_model(...)`` and the model zoo.

The same core the operators use (``core.ground_and_segment``,
``core.video_pipeline.ground_and_track``), behind FiftyOne's
:class:`fiftyone.core.models.Model` interface:

* on an **image** collection, ``predict_all`` gets a batch of RGB ``uint8``
  arrays (FiftyOne decodes them; ``batch_size=`` batches them) and returns one
  ``fo.Detections`` with instance masks per image;
* on a **video** collection (``media_type="video"``), ``predict`` gets FiftyOne's
  video reader and returns ``{frame number: fo.Detections}``; each detection's
  ``index`` is its track id, stable across frames.

What to find is ``classes=["car", "person"]`` or ``prompt="car. person."``, or,
per sample, a text field named with ``prompt_field``, given to the model or to
``apply_model`` (FiftyOne's convention for prompted models: ``apply_model``
passes its extra keyword arguments to :class:`~fiftyone.core.models.SamplesMixin`
models as ``needs_fields``)::

    import fiftyone.zoo as foz
    model = foz.load_zoo_model("grounded-sam2", classes=["car", "person"])
    dataset.apply_model(model, label_field="gsam2", batch_size=4)
    dataset.apply_model(model, label_field="gsam2", prompt_field="what")  # one prompt per sample
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import fiftyone as fo
import fiftyone.core.models as fom
import numpy as np

from ..core import DEFAULT_DETECTOR, DEFAULT_SEGMENTER, InputError, load_detector, load_segmenter
from ..core.engine import read_ahead
from ..core.models import load_tracker
from ..core.pipeline import DEFAULT_BOX_THRESHOLD, DEFAULT_TEXT_THRESHOLD, detector_phrases, ground_and_segment
from ..core.video_io import iter_frames, probe_video
from ..core.video_pipeline import DEFAULT_STEP, ground_and_track
from .labels import to_fiftyone_detections

SOURCE = "apply_model"
MEDIA_TYPES = ("image", "video")


class GroundedSam2Model(fom.Model, fom.SamplesMixin):
    """Text prompt → detections with SAM 2 masks (images), or tracks with stable ids (videos).

    Args:
        classes: what to find, e.g. ``["car", "person"]`` (or use ``prompt``).
        prompt: the same as one string, ``"car. person."``.
        prompt_field: a text field of each sample holding that sample's prompt
            (used instead of ``classes``/``prompt`` where it is set).
        detector: any detector name the CLI takes (``"owlv2"``, ``"florence2"``, a hub id, a folder).
        segmenter: a SAM 2 checkpoint (hub id, folder, or ``tiny``/``small``/``base-plus``/``large``).
        media_type: ``"image"`` or ``"video"`` (videos are tracked with ``tracker``).
        tracker: the SAM 2 video checkpoint (videos only; default: ``segmenter``).
        box_threshold, text_threshold: the detector's score thresholds.
        step: videos: run the detector every ``step`` frames to pick up new objects.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    """

    def __init__(
        self,
        classes: Sequence[str] | None = None,
        prompt: str | None = None,
        prompt_field: str | None = None,
        detector: str = DEFAULT_DETECTOR,
        segmenter: str = DEFAULT_SEGMENTER,
        media_type: str = "image",
        tracker: str | None = None,
        box_threshold: float = DEFAULT_BOX_THRESHOLD,
        text_threshold: float = DEFAULT_TEXT_THRESHOLD,
        step: int = DEFAULT_STEP,
        device: str = "auto",
    ):
        fom.SamplesMixin.__init__(self)
        if media_type not in MEDIA_TYPES:
            raise InputError(f"media_type {media_type!r}: choose image or video")
        self.detector = load_detector(detector, device=device)
        self.segmenter = None if self.detector.produces_masks else load_segmenter(segmenter, device=device)
        self.tracker = load_tracker(tracker or segmenter, device=device) if media_type == "video" else None
        self.phrases = self._phrases(classes, prompt, required=prompt_field is None)
        self.prompt_field = prompt_field
        self._media_type = media_type
        self.box_threshold, self.text_threshold, self.step = box_threshold, text_threshold, step

    def _phrases(self, classes: Sequence[str] | None, prompt: str | None, required: bool) -> list[str] | None:
        """The model-wide phrases (``None``: each sample's ``prompt_field`` gives them)."""
        if classes is not None and prompt is not None:
            raise InputError("give classes or prompt, not both")
        if not self.detector.requires_prompt:
            return []  # a prompt-free detector (Florence-2's object_detection...) names what it finds
        if classes is not None:
            prompt = ". ".join(str(name) for name in classes) + "." if len(classes) else ""
        if prompt is None:
            if required:
                raise InputError("what to find: give classes=[...] or prompt='car. person.' (or prompt_field)")
            return None
        return detector_phrases(self.detector, prompt)

    # -------------------------------------------------- FiftyOne's Model interface

    @property
    def needs_fields(self) -> dict[str, str]:
        """The sample fields inference reads: FiftyOne selects only these before calling predict.

        ``apply_model(..., prompt_field="what")`` sets them for one run (FiftyOne's
        convention); the model's own ``prompt_field`` applies otherwise.
        """
        fields = dict(self._fields or {})
        if self.prompt_field and "prompt_field" not in fields:
            fields["prompt_field"] = self.prompt_field
        return fields

    @needs_fields.setter
    def needs_fields(self, fields: dict[str, str]) -> None:
        self._fields = fields

    @property
    def media_type(self) -> str:
        return self._media_type

    @property
    def ragged_batches(self) -> bool:
        return True  # images of different sizes: the processors resize them, FiftyOne must not stack them

    @property
    def transforms(self):
        return None  # FiftyOne hands over decoded RGB uint8 arrays

    @property
    def preprocess(self) -> bool:
        return False

    @preprocess.setter
    def preprocess(self, value: bool) -> None:
        pass  # nothing to switch off: the processors run inside predict

    @property
    def has_logits(self) -> bool:
        return False

    @property
    def has_embeddings(self) -> bool:
        return False

    def predict(self, arg, sample=None):
        if self._media_type == "video":
            return self._track(arg.inpath, self._sample_phrases(sample))
        return self.predict_all([arg], samples=[sample] if sample is not None else None)[0]

    def predict_all(self, args, samples=None):
        images = [np.asarray(image) for image in args]
        prompts = [self._sample_phrases(sample) for sample in (samples or [None] * len(images))]
        results: list[Any] = [None] * len(images)
        # One batched pass per distinct prompt (all of them, unless prompt_field varies per sample).
        for phrases in {tuple(p) if p is not None else None for p in prompts}:
            positions = [i for i, p in enumerate(prompts) if (tuple(p) if p is not None else None) == phrases]
            found = ground_and_segment(
                [images[i] for i in positions],
                list(phrases) if phrases is not None else None,
                detector=self.detector,
                segmenter=self.segmenter,
                box_threshold=self.box_threshold,
                text_threshold=self.text_threshold,
                batch_size=len(positions),
                compact_masks=True,  # FiftyOne's box-crop masks come from the mask crops
            )
            for position, detections in zip(positions, found):
                results[position] = to_fiftyone_detections(detections, images[position].shape[:2], SOURCE)
        return results

    # -------------------------------------------------- helpers

    def _sample_phrases(self, sample) -> list[str] | None:
        field = self.needs_fields.get("prompt_field")
        if field and sample is not None:
            value = sample.get_field(field) if sample.has_field(field) else None
            if isinstance(value, str) and value.strip():
                return detector_phrases(self.detector, value)
        if self.phrases is None:
            raise InputError(f"sample {getattr(sample, 'id', '?')}: no prompt in field {field!r}")
        return self.phrases

    def _track(self, filepath: str, phrases: list[str] | None) -> dict[int, fo.Detections]:
        """Every frame's tracks of one video, keyed by FiftyOne's 1-based frame numbers."""
        info = probe_video(filepath)
        results = ground_and_track(
            read_ahead(iter_frames(filepath)),  # decoded a few frames ahead, in a thread
            phrases,
            self.detector,
            self.segmenter,
            self.tracker,
            step=self.step,
            box_threshold=self.box_threshold,
            text_threshold=self.text_threshold,
        )
        frames = {}
        for result in results:
            labels = to_fiftyone_detections(result.detections, (info.height, info.width), SOURCE)
            for detection, track_id in zip(labels.detections, result.detections.tracker_id):
                detection.index = int(track_id)
            frames[result.frame_index + 1] = labels
        return frames
