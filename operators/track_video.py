"""Operator ``track_video``: follow objects through videos with stable ids in ``frames.<field>``."""

from __future__ import annotations

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types
from fiftyone import ViewField as F

from ..cluster.fiftyone_datasets import label_on_ray, wants_ray
from ..core import (
    DEFAULT_SEGMENTER,
    GroundedSam2Error,
    InputError,
    parse_prompt,
)
from ..core.engine import read_ahead
from ..core.backends import parse_sam3_tracker_spec
from ..core.run import Run
from ..core.video_io import iter_frames, probe_video
from ..core.video_pipeline import DEFAULT_IOU_THRESHOLD, DEFAULT_STEP, BoxPrompt, track_from_boxes
from . import dataset_writes, forms, runs, sharding, summaries
from .params import check_field_name, param_problem, spec_from_params
from .ray_option import add_ray_inputs
from .labels import SOURCE_ATTRIBUTE, box_from_relative, to_fiftyone_detections

SOURCE = "track_video"
MODES = ("prompt", "field")


def frame_detection_fields(dataset) -> list[str]:
    if dataset is None or dataset.media_type != "video":
        return []
    schema = dataset.get_frame_field_schema(embedded_doc_type=fo.Detections) or {}
    return sorted(schema)


# Frames per database write: memory stays bounded however long the video is.
FRAMES_PER_WRITE = 256


class FrameLabelWriter:
    """Writes one video's tracks in bounded batches of frames.

    The video's old tracks are cleared just before the first batch (a re-run
    replaces them); if tracking fails after that, what was written is cleared
    again, so a video ends with either all of its new tracks or none.
    """

    def __init__(self, dataset, view, sample_id: str, label_field: str, frames_per_write: int | None = None):
        self.dataset, self.view, self.sample_id, self.label_field = dataset, view, sample_id, label_field
        self.frames_per_write = frames_per_write or FRAMES_PER_WRITE
        self.pending: dict[int, fo.Detections] = {}
        self.cleared = False

    def add(self, frame_number: int, labels: fo.Detections) -> None:
        self.pending[frame_number] = labels
        if len(self.pending) >= self.frames_per_write:
            self.flush()

    def flush(self) -> None:
        if not self.cleared:
            self.dataset.select(self.sample_id).clear_frame_field(self.label_field)
            self.cleared = True
        if self.pending:
            self.view.set_values(f"frames.{self.label_field}", {self.sample_id: self.pending}, key_field="id")
            self.pending = {}

    def finish(self) -> None:
        self.flush()

    def abandon(self) -> None:
        self.pending = {}
        if self.cleared:
            self.dataset.select(self.sample_id).clear_frame_field(self.label_field)


#: What a SAM 3 tracker does not take (it finds the prompt's objects itself); the form hides these, stale values are ignored.
SAM3_IGNORES = ("detector", "task", "slice_size", "slice_overlap", "segmenter", "reverse")


def run_spec(params: dict, ctx=None):
    """The run's spec from the parameters (:func:`~.params.spec_from_params`), as each mode reads them.

    With SAM 3, the detector's settings are ignored (the form does not show
    them); with boxes from a field, the prompt and the detector are not read.
    """
    mode = params.get("mode", "prompt")
    sam3 = mode == "prompt" and parse_sam3_tracker_spec(params.get("tracker") or DEFAULT_SEGMENTER) is not None
    ignored = SAM3_IGNORES if sam3 else ("prompt", "detector", "task", "slice_size", "slice_overlap") if mode == "field" else ()
    return spec_from_params({name: value for name, value in params.items() if name not in ignored}, ctx)


class TrackVideo(foo.Operator):
    @property
    def config(self) -> foo.OperatorConfig:
        return forms.operator_config(
            "track_video",
            "Grounded SAM 2: track objects through videos",
            "Find objects from a text prompt (or from boxes on a few frames) and follow them with SAM 2",
        )

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        inputs.view_target(ctx)
        if not forms.require_media_in_form(inputs, ctx, "video"):
            return types.Property(inputs, view=types.View(label=self.config.label))
        inputs.enum(
            "mode",
            list(MODES),
            default="prompt",
            label="Objects from",
            description="prompt: a text prompt; field: existing frame-level boxes (e.g. an annotator's key frames)",
            view=types.RadioGroup(),
        )
        if ctx.params.get("mode", "prompt") == "field":
            fields = frame_detection_fields(ctx.dataset)
            if fields:
                inputs.enum(
                    "source_field",
                    fields,
                    default=fields[0],
                    required=True,
                    label="Boxes from (frames.)",
                    description="A frame-level Detections field: each object's boxes on a few key frames, "
                    "with the same index on every frame where it appears",
                    view=types.DropdownView(),
                )
            else:
                problem = (
                    f"dataset {ctx.dataset.name!r} has no frame-level Detections field: draw boxes on a few "
                    "key frames first (or choose prompt)"
                )
                forms.add_form_error(inputs, "source_error", problem)
        # The tracker first: with SAM 3 it finds the prompt by itself, and the detector and SAM 2 are not asked for.
        forms.add_checkpoint_input(
            inputs,
            ctx.params,
            "tracker",
            default=DEFAULT_SEGMENTER,
            label="Video tracker",
            description="A SAM 2 video checkpoint, or sam3 to find and track the prompt with SAM 3 alone "
            "(on every frame, with no detector or SAM 2 image model)",
        )
        sam3 = parse_sam3_tracker_spec(ctx.params.get("tracker") or DEFAULT_SEGMENTER) is not None
        if ctx.params.get("mode", "prompt") == "prompt":
            if not sam3:
                forms.add_detector_inputs(inputs, ctx)
            if sam3 or forms.needs_prompt(ctx.params):
                inputs.str("prompt", required=True, label="Prompt", description='What to follow, e.g. "car. person."')
            if not sam3:
                forms.add_checkpoint_input(
                    inputs, ctx.params, "segmenter", default=DEFAULT_SEGMENTER, label="SAM 2 image checkpoint"
                )
            forms.add_threshold_inputs(inputs, ctx.params)
            if not sam3:
                step = inputs.int("step", default=DEFAULT_STEP, label="Detect every N frames")
                forms.flag_problem(step, lambda: param_problem(ctx.params, ["step"]))
                iou = inputs.float("iou_threshold", default=DEFAULT_IOU_THRESHOLD, label="Same-object mask IoU")
                forms.flag_problem(iou, lambda: param_problem(ctx.params, ["iou_threshold"]))
                inputs.enum("prompt_type", ["mask", "box", "point"], default="mask", label="Prompt SAM 2 with")
                inputs.bool("reverse", default=False, label="Also track backwards from where objects appear")
            end_after = inputs.int(
                "end_after",
                label="End a track after N frames unseen",
                description="A later sighting gets a new id (empty: twice the detection interval; SAM 3: 40)",
            )
            forms.flag_problem(end_after, lambda: param_problem(ctx.params, ["end_after"]))
        forms.add_device_input(inputs)
        inputs.str(
            "label_field",
            default="gsam2_tracks",
            required=True,
            label="Frame label field",
            description="Written as frames.<field>",
        )
        add_ray_inputs(inputs, ctx.params)
        forms.add_run_notice(inputs)
        return types.Property(inputs, view=types.View(label=self.config.label))

    def execute(self, ctx):
        return runs.execute(ctx, lambda: self.prepare(ctx), self.resolve_output(ctx))

    def prepare(self, ctx) -> runs.Prepared:
        """Check the parameters and load the models; return the work."""
        params = ctx.params
        mode = params.get("mode", "prompt")
        if mode not in MODES:
            raise InputError(f"mode {mode!r}: choose prompt or field")
        forms.require_media(ctx, "video")
        spec = run_spec(params, ctx)  # every setting checked before any model loads
        label_field = (params.get("label_field") or "").strip().removeprefix("frames.")
        check_field_name(label_field, "gsam2_tracks", frame_field=True)
        self._check_frame_field(ctx.dataset, label_field)
        source_field = None
        if mode == "prompt":
            if spec.tracks_with_sam3 or forms.needs_prompt(params):
                parse_prompt(params.get("prompt") or "")  # an empty prompt fails before any model loads
        else:
            source_field = params.get("source_field") or ""
            if source_field not in frame_detection_fields(ctx.dataset):
                raise InputError(f"source field {source_field!r}: not a frame-level Detections field")
        if wants_ray(params):  # the videos are tracked on the cluster's workers (gsam2.cluster), in shards
            fields = lambda: self._ensure_frame_field(ctx.dataset, label_field)  # noqa: E731
            return label_on_ray(ctx, self.uri, f"`frames.{label_field}`", fields, what="videos")
        if mode == "prompt":
            # SAM 3, or the detector + SAM 2: a prompt either cannot take fails here, before anything is written.
            run = Run(spec).load_for_video(check_prompt=True)
        else:
            run = Run(spec)
            run.video_tracker  # noqa: B018 - a bad checkpoint fails here, before anything is written
        self._ensure_frame_field(ctx.dataset, label_field)
        return self._track_all(ctx, run, mode, label_field, source_field)

    @staticmethod
    def _ensure_frame_field(dataset, label_field: str) -> None:
        if label_field not in dataset.get_frame_field_schema():
            dataset.add_frame_field(label_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)

    def _track_all(self, ctx, run: Run, mode, label_field, source_field) -> runs.Work:
        """Track every video of the view, one after another, yielding progress within each."""
        view = sharding.shard_of(ctx.target_view(), ctx.params)  # a Ray worker's range of the videos (gsam2.cluster)
        sharding.fail_abandoned_runs(ctx, self.uri)
        rows = list(zip(*view.values(["id", "filepath"])))
        processed, objects, failed = 0, 0, []
        for position, (sample_id, filepath) in enumerate(rows):
            yield runs.Progress(position, len(rows), "videos")
            writer = None
            try:
                info = probe_video(filepath)
                frames = read_ahead(iter_frames(filepath))  # decoded a few frames ahead, in a thread
                if mode == "prompt":
                    results = run.track(frames)  # SAM 3, or the detector + SAM 2 (core/run.py)
                else:
                    prompts = self._prompts_from_field(ctx.dataset, sample_id, source_field, info)
                    results = track_from_boxes(frames, prompts, run.video_tracker)
                writer = FrameLabelWriter(ctx.dataset, view, sample_id, label_field)
                ids = set()
                for result in results:
                    labels = to_fiftyone_detections(result.detections, (info.height, info.width), SOURCE)
                    for detection, object_id in zip(labels.detections, result.detections.tracker_id):
                        detection.index = int(object_id)
                        ids.add(int(object_id))
                    writer.add(result.frame_index + 1, labels)  # FiftyOne frames are 1-based
                    if result.frame_index % 25 == 0:
                        within = min(0.99, result.frame_index / max(info.frame_count or 1, 1))
                        yield runs.Progress(position + within, len(rows), "videos")
                writer.finish()
            except GroundedSam2Error as error:
                if writer is not None:
                    writer.abandon()
                failed.append({"id": sample_id, "filepath": filepath, "error": str(error)})
                dataset_writes.write_errors(view, label_field, {sample_id: str(error)})
                continue
            except BaseException:
                if writer is not None:
                    writer.abandon()  # nothing half-written, whatever stopped the run
                raise
            dataset_writes.write_errors(view, label_field, {sample_id: None})
            processed += 1
            objects += len(ids)
        yield runs.Progress(len(rows), len(rows), "videos")
        return summaries.run_summary(processed, objects, failed, f"`frames.{label_field}`", what="videos")

    @staticmethod
    def _prompts_from_field(dataset, sample_id, source_field, info) -> list[BoxPrompt]:
        sample = dataset[sample_id]
        prompts = []
        for frame_number, frame in sample.frames.items():
            labels = frame[source_field] if frame.has_field(source_field) else None
            for detection in labels.detections if labels is not None else []:
                prompts.append(
                    BoxPrompt(
                        frame_index=frame_number - 1,
                        box=box_from_relative(detection.bounding_box, info.width, info.height),
                        label=detection.label or "",
                        object_id=detection.index,
                        confidence=detection.confidence,
                    )
                )
        return prompts

    @staticmethod
    def _check_frame_field(dataset, label_field: str) -> None:
        """Refuse, before anything is written, a frame field or error field this run must not clear.

        Each video's ``frames.<field>`` is cleared before its new tracks are
        written, so an existing field may only hold labels track_video wrote
        (an annotator's key frames, or another tool's labels, would be lost).
        """
        field = dataset.get_frame_field_schema().get(label_field)
        if field is not None:
            if getattr(field, "document_type", None) is not fo.Detections:
                raise InputError(f"frame field {label_field!r} exists and does not hold Detections")
            path = f"frames.{label_field}"
            others = dataset.filter_labels(path, F(SOURCE_ATTRIBUTE) != SOURCE).count(f"{path}.detections")
            if others:
                raise InputError(
                    f"frame field {label_field!r} holds {others} labels track_video did not write, "
                    "which a run would replace: choose another label field"
                )
        dataset_writes.check_error_field(dataset, label_field)

    def resolve_output(self, ctx) -> types.Property:
        return summaries.summary_outputs(self.config.label)

    def __call__(
        self,
        sample_collection,
        prompt: str | None = None,
        source_field: str | None = None,
        label_field: str = "gsam2_tracks",
        delegate: bool = False,
        **options,
    ):
        """Track from Python: ``op(dataset, "car. person.")`` or ``op(dataset, source_field="keyframes")``.

        ``options``: detector (any backend, e.g. ``"owlv2"`` or ``"florence2"`` with
        ``task``), segmenter, tracker (a SAM 2 video checkpoint, or ``"sam3"`` to find and track
        with SAM 3 alone), device, box_threshold, text_threshold, slice_size,
        slice_overlap, step, iou_threshold, prompt_type, reverse; ``ray_address``
        (``"auto"``, ``"HOST:PORT"``) tracks the videos on that Ray cluster's workers,
        ``ray_workers`` and ``ray_gpus_per_worker`` size the pool.
        """
        params = {
            "mode": "field" if source_field else "prompt",
            "prompt": prompt,
            "source_field": source_field,
            "label_field": label_field,
            **options,
        }
        return runs.run_in_python(self, sample_collection, params, delegate)
