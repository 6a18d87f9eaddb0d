"""Operator ``ground_and_segment``: a text prompt -> Detections with instance masks."""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ..core import (
    DEFAULT_BOX_THRESHOLD,
    DEFAULT_DETECTOR,
    DEFAULT_SEGMENTER,
    DEFAULT_TEXT_THRESHOLD,
    InputError,
    parse_prompt,
)
from ..core.detectors.sliced import DEFAULT_SLICE_OVERLAP
from ..cluster.fiftyone_datasets import label_on_ray, wants_ray
from ..core.run import Run
from . import dataset_writes, forms, runs, sharding, summaries
from .params import detector_backend, run_settings, spec_from_params
from .ray_option import add_ray_inputs

#: The prompt's help for each Florence-2 task that takes one (the others need none).
FLORENCE2_PROMPT_HELP = {
    "phrase_grounding": 'A sentence; every phrase in it is found, e.g. "a dog chasing a red ball"',
    "referring_expression_segmentation": 'One description of one object, e.g. "the man in the blue shirt"',
    "open_vocabulary_detection": 'What to find, e.g. "red car"; separate several with periods: "red car. bus."',
}
DEFAULT_PROMPT_HELP = 'What to find: class names each followed by a period, e.g. "car. person. dog."'

SOURCE = "ground_and_segment"


class GroundAndSegment(foo.Operator):
    default_field = "gsam2"
    source = SOURCE  # tags this operator's labels, so a re-run replaces only its own
    show_thresholds = True

    @property
    def config(self) -> foo.OperatorConfig:
        return forms.operator_config(
            "ground_and_segment",
            "Grounded SAM 2: detect and segment from a text prompt",
            "Grounding DINO finds what the prompt names, SAM 2 segments it",
        )

    def resolve_delegation(self, ctx) -> bool | None:
        # Splitting into shards only queues work: do that part at once.
        return False if sharding.wants_fan_out(ctx.params) else None

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        inputs.view_target(ctx)
        forms.require_images_in_form(inputs, ctx)
        # The detector (and Florence-2's task) first: they decide whether a prompt is needed and what it is.
        self.add_detector_inputs(inputs, ctx)
        self.add_prompt_input(inputs, ctx)
        if detector_backend(self.run_params(ctx.params)) == "sam3":
            forms.add_device_input(inputs)  # SAM 3 segments what it finds: no SAM 2 checkpoint to ask for
        else:
            forms.add_model_inputs(inputs, detector=False, ctx=ctx)
        if self.show_thresholds:
            forms.add_threshold_inputs(inputs, ctx.params)
        forms.add_output_inputs(inputs, ctx, default_field=self.default_field)
        add_ray_inputs(inputs, ctx.params)
        forms.add_run_notice(inputs)
        return types.Property(inputs, view=types.View(label=self.config.label))

    def add_prompt_input(self, inputs: types.Object, ctx) -> None:
        params = self.run_params(ctx.params)
        if not forms.needs_prompt(params):
            return
        help_text = DEFAULT_PROMPT_HELP
        if detector_backend(params) == "florence2":
            help_text = FLORENCE2_PROMPT_HELP.get(params.get("task") or "", DEFAULT_PROMPT_HELP)
        prompt = inputs.str("prompt", required=True, label="Prompt", description=help_text)
        if ctx.params.get("prompt") is not None:
            try:
                parse_prompt(ctx.params["prompt"])
            except InputError as error:
                prompt.invalid = True
                prompt.error_message = str(error)

    def add_detector_inputs(self, inputs: types.Object, ctx) -> None:
        forms.add_detector_inputs(inputs, ctx)

    def run_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters as this operator runs them (subclasses fix the detector)."""
        return params

    def execute(self, ctx):
        return runs.execute(ctx, lambda: self.prepare(ctx), self.resolve_output(ctx))

    def prepare(self, ctx) -> runs.Prepared:
        """Check the parameters and load the models; return the work (or, split into shards, what was queued)."""
        params = self.run_params(ctx.params)
        if forms.needs_prompt(params):
            # An empty prompt fails before any model loads, and before shards are queued (they load nothing here).
            parse_prompt(params.get("prompt") or "")
        settings = run_settings(params)
        # One batch per forward pass and per write.
        spec = spec_from_params(params, ctx).replace(batch_size=settings["batch_size"])
        forms.require_images(ctx)
        dataset_writes.check_outputs(ctx.dataset, settings)
        if wants_ray(params):  # the work runs on the cluster's workers (gsam2.cluster), in shards of the view
            fields = lambda: dataset_writes.ensure_fields(ctx.dataset, settings["label_field"])  # noqa: E731
            return label_on_ray(ctx, self.uri, f"`{settings['label_field']}`", fields)
        if sharding.wants_fan_out(params):
            return summaries.queued_summary(sharding.queue_shards(ctx, self.uri))

        view = sharding.shard_of(ctx.target_view(), params)
        # A bad checkpoint, or a prompt the detector cannot take (before SAM 2 loads), fails before anything is written.
        run = Run(spec).load_for_images(check_prompt=True)
        dataset_writes.ensure_fields(ctx.dataset, settings["label_field"])

        steps = run.preparation_steps()
        # The processors, one batch ahead of the models (core/engine.py), on the loaded rows' images.
        prepare = [lambda loaded, step=step: step([image for _, image, _ in loaded]) for step in steps]

        def label_batch(loaded, prepared=None):
            results = run.label_images(
                [image for _, image, _ in loaded],
                prepared=prepared or None,
                compact_masks=True,  # FiftyOne stores box crops: made from the mask crops (labels.py)
                defer_masks=True,  # made in label_samples' encode workers, not in the model's thread
            )
            return [(detections, None) for detections in results]

        rows = [(sample_id, filepath, None) for sample_id, filepath in zip(*view.values(["id", "filepath"]))]
        return runs.label_samples(ctx, view, rows, settings, self.source, label_batch, prepare)

    def resolve_output(self, ctx) -> types.Property:
        return summaries.summary_outputs(self.config.label)

    def __call__(
        self,
        sample_collection,
        prompt: str | None,
        label_field: str = "gsam2",
        detector: str = DEFAULT_DETECTOR,
        task: str | None = None,
        slice_size: int = 0,
        slice_overlap: int = DEFAULT_SLICE_OVERLAP,
        segmenter: str = DEFAULT_SEGMENTER,
        box_threshold: float = DEFAULT_BOX_THRESHOLD,
        text_threshold: float = DEFAULT_TEXT_THRESHOLD,
        batch_size: int | None = None,
        write_mode: str = "overwrite",
        mask_dir: str | None = None,
        device: str = "auto",
        num_shards: int = 1,
        ray_address: str | None = None,
        delegate: bool = False,
    ):
        """Detect and segment what ``prompt`` names in ``sample_collection``, from Python.

        ``detector`` is any backend (``"owlv2"``, ``"florence2"`` with ``task``,
        ``"dinox"``, ...); ``slice_size > 0`` turns on sliced inference. The run
        happens in this process, with a progress bar, however long it takes;
        ``delegate=True`` queues it for a ``fiftyone delegated launch`` worker
        instead. ``batch_size`` defaults to 1 on a CPU and 4 on a GPU.
        ``ray_address`` (``"auto"``, ``"HOST:PORT"``, ``"ray://HOST:10001"``)
        labels the collection on that Ray cluster's workers instead
        (:func:`gsam2.cluster.label_dataset` takes a ``RunSpec`` and sizes the pool).

        Returns the run's summary: ``processed``, ``objects``, ``failed`` (file
        and reason of each failure) and ``summary`` (the same as text).

        Example::

            op = foo.get_operator("@gsam2/grounded-sam2/ground_and_segment")
            op(dataset, "car. person.", label_field="gsam2")
        """
        params = {
            "prompt": prompt,
            "label_field": label_field,
            "detector": detector,
            "task": task,
            "slice_size": slice_size,
            "slice_overlap": slice_overlap,
            "segmenter": segmenter,
            "box_threshold": box_threshold,
            "text_threshold": text_threshold,
            "batch_size": batch_size,
            "write_mode": write_mode,
            "mask_storage": "files" if mask_dir else "database",
            "mask_dir": mask_dir,
            "device": device,
            "num_shards": num_shards,
            "ray_address": ray_address,
        }
        return runs.run_in_python(self, sample_collection, params, delegate)
