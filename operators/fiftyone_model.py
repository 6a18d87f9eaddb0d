"""Grounded SAM 2 as a FiftyOne model, for ``dataset.apply_model(...)`` and the model zoo.

The same run the operators use (a :class:`~..core.spec.RunSpec` built from the
model's keyword arguments, run by :class:`~..core.run.Run`), behind FiftyOne's
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

from ..core import InputError, parse_prompt
from ..core.engine import read_ahead
from ..core.run import Run
from ..core.spec import RunSpec, SettingError
from ..core.video_io import iter_frames, probe_video
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
        media_type: ``"image"`` or ``"video"`` (videos are tracked with ``tracker``).
        settings: any setting of a run (:class:`~..core.spec.RunSpec`): ``detector`` (any
            name the CLI takes: ``"owlv2"``, ``"florence2"`` with ``task``, a hub id, a folder),
            ``task``, ``slice_size``, ``slice_overlap``, ``segmenter``, ``tracker`` (videos: a SAM 2
            video checkpoint, ``"edgetam"`` or ``"sam3"``; default: ``segmenter``), ``device``,
            ``box_threshold``, ``text_threshold``, ``step``, ``iou_threshold``, ``prompt_type``,
            ``reverse``, ``end_after``...
    """

    def __init__(
        self,
        classes: Sequence[str] | None = None,
        prompt: str | None = None,
        prompt_field: str | None = None,
        media_type: str = "image",
        **settings: Any,
    ):
        fom.SamplesMixin.__init__(self)
        if media_type not in MEDIA_TYPES:
            raise InputError(f"media_type {media_type!r}: choose image or video")
        if classes is not None and prompt is not None:
            raise InputError("give classes or prompt, not both")
        if classes is not None:
            prompt = ". ".join(str(name) for name in classes) + "." if len(classes) else ""
        if media_type == "video" and not settings.get("tracker") and settings.get("segmenter"):
            settings["tracker"] = settings["segmenter"]  # one SAM 2 checkpoint for images and video
        try:
            self.spec = RunSpec.build(**settings)
            if media_type == "video":
                self.spec.check_for_video()
        except SettingError as error:
            raise InputError(error.spelled(lambda name: name)) from None
        self._media_type = media_type
        self.run = Run(self.spec)
        if self._sam3_video():
            self.run.sam3_tracker  # noqa: B018 - SAM 3 alone; its phrases are checked below
        elif media_type == "video":
            self.run.load_for_video()  # the detector, SAM 2 and the video tracker (SAM 2 or EdgeTAM)
        else:
            self.run.load_for_images()
        self.phrases = self._phrases(prompt, required=prompt_field is None)
        self.prompt_field = prompt_field

    def _phrases(self, prompt: str | None, required: bool) -> list[str] | None:
        """The model-wide phrases (``None``: each sample's ``prompt_field`` gives them)."""
        if self._sam3_video():
            if prompt is None:
                if required:
                    raise InputError("what to find: give classes=[...] or prompt='car. person.' (or prompt_field)")
                return None
            return self.run.sam3_tracker.check_phrases(parse_prompt(prompt))
        if not self.run.detector.requires_prompt:
            return []  # a prompt-free detector (Florence-2's object_detection...) names what it finds
        if prompt is None:
            if required:
                raise InputError("what to find: give classes=[...] or prompt='car. person.' (or prompt_field)")
            return None
        return self.run.phrases(prompt)

    def _sam3_video(self) -> bool:
        """Whether videos are tracked by SAM 3 alone (no detector: it takes the phrases itself)."""
        return self._media_type == "video" and self.spec.tracks_with_sam3

    @property
    def detector(self):
        return self.run.detector

    @property
    def segmenter(self):
        return self.run.segmenter

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
            if self.spec.batch_size is None:
                self.run.batch_size = len(positions)  # apply_model's batch_size: one forward pass per batch
            found = self.run.label_images(
                [images[i] for i in positions],
                list(phrases) if phrases is not None else None,
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
                return parse_prompt(value) if self._sam3_video() else self.run.phrases(value)
        if self.phrases is None:
            raise InputError(f"sample {getattr(sample, 'id', '?')}: no prompt in field {field!r}")
        return self.phrases

    def _track(self, filepath: str, phrases: list[str] | None) -> dict[int, fo.Detections]:
        """Every frame's tracks of one video, keyed by FiftyOne's 1-based frame numbers."""
        info = probe_video(filepath)
        # Decoded a few frames ahead, in a thread; SAM 3 or the detector + SAM 2 (core/run.py).
        results = self.run.track(read_ahead(iter_frames(filepath)), phrases)
        frames = {}
        for result in results:
            labels = to_fiftyone_detections(result.detections, (info.height, info.width), SOURCE)
            for detection, track_id in zip(labels.detections, result.detections.tracker_id):
                detection.index = int(track_id)
            frames[result.frame_index + 1] = labels
        return frames
