"""Operator ``auto_label``: labels without a prompt (Florence-2 caption -> phrase grounding -> SAM 2).

The caption goes to the sample field ``<label field>_caption``, so the App shows
what the model saw next to what it grounded.
"""

from __future__ import annotations


import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from ..core import DEFAULT_SEGMENTER
from ..core.autolabel import DEFAULT_CAPTION_TASK
from ..core.detectors.florence2 import CAPTION_TASKS
from ..core.backends import DETECTOR_BACKENDS
from ..cluster.fiftyone_datasets import label_on_ray, wants_ray
from ..core.run import Run
from . import dataset_writes, forms, runs, sharding, summaries
from .params import run_settings, spec_from_params
from .ray_option import add_ray_inputs

SOURCE = "auto_label"
DEFAULT_FLORENCE2 = DETECTOR_BACKENDS["florence2"].default_checkpoint


def caption_field_name(label_field: str) -> str:
    return f"{label_field}_caption"


def ensure_fields(dataset, label_field: str) -> None:
    """Create the label field and the caption field beside it (see :func:`~.dataset_writes.ensure_fields`)."""
    dataset_writes.ensure_fields(dataset, label_field)
    if caption_field_name(label_field) not in dataset.get_field_schema():
        dataset.add_sample_field(
            caption_field_name(label_field),
            fo.StringField,
            description=f"Florence-2's caption behind {label_field!r}",
            info=dataset_writes.field_info("captions", label_field),  # what check_outputs recognises as ours
        )


class AutoLabelOperator(foo.Operator):
    """The ``auto_label`` operator (the core's result class is :class:`~..core.autolabel.CaptionedDetections`)."""

    @property
    def config(self) -> foo.OperatorConfig:
        return forms.operator_config(
            "auto_label",
            "Grounded SAM 2: auto-label without a prompt (Florence-2 captions)",
            "Florence-2 describes each image, grounds the phrases of its caption, SAM 2 segments them",
        )

    def resolve_delegation(self, ctx) -> bool | None:
        return False if sharding.wants_fan_out(ctx.params) else None

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        inputs.view_target(ctx)
        forms.require_images_in_form(inputs, ctx)
        inputs.enum(
            "caption_task",
            list(CAPTION_TASKS),
            default=DEFAULT_CAPTION_TASK,
            label="Caption",
            description="Longer captions name more objects and take longer. "
            "Each image's caption is saved in the sample field <label field>_caption",
            view=types.DropdownView(),
        )
        forms.add_checkpoint_input(
            inputs, ctx.params, "checkpoint", default=DEFAULT_FLORENCE2, label="Florence-2 checkpoint"
        )
        forms.add_model_inputs(inputs, detector=False, ctx=ctx)
        forms.add_output_inputs(inputs, ctx, default_field="auto_label")
        add_ray_inputs(inputs, ctx.params)
        forms.add_run_notice(inputs)
        return types.Property(inputs, view=types.View(label=self.config.label))

    @staticmethod
    def run_params(params: dict) -> dict:
        """The parameters as the run reads them: Florence-2's checkpoint as the detector, the caption task set."""
        checkpoint = params.get("checkpoint") or DEFAULT_FLORENCE2
        return dict(params, detector=f"florence2:{checkpoint}", caption_task=params.get("caption_task") or DEFAULT_CAPTION_TASK)

    def execute(self, ctx):
        return runs.execute(ctx, lambda: self.prepare(ctx), self.resolve_output(ctx))

    def prepare(self, ctx) -> runs.Prepared:
        params = self.run_params(ctx.params)
        settings = run_settings(params)
        spec = spec_from_params(params, ctx).replace(batch_size=settings["batch_size"])
        forms.require_images(ctx)
        dataset_writes.check_outputs(ctx.dataset, settings, {caption_field_name(settings["label_field"]): "captions"})
        if wants_ray(params):  # the work runs on the cluster's workers (gsam2.cluster), in shards of the view
            fields = lambda: ensure_fields(ctx.dataset, settings["label_field"])  # noqa: E731
            return label_on_ray(ctx, self.uri, f"`{settings['label_field']}`", fields)
        if sharding.wants_fan_out(params):
            return summaries.queued_summary(sharding.queue_shards(ctx, self.uri))

        view = sharding.shard_of(ctx.target_view(), params)
        run = Run(spec).load_for_images()  # Florence-2 (grounding its captions) and SAM 2
        label_field = settings["label_field"]
        ensure_fields(ctx.dataset, label_field)

        def label_batch(loaded):
            # Box crops for FiftyOne come from the mask crops.
            results = run.auto_label([image for _, image, _ in loaded], compact_masks=True)
            return [(result.detections, None, {caption_field_name(label_field): result.caption}) for result in results]

        rows = [(sample_id, filepath, None) for sample_id, filepath in zip(*view.values(["id", "filepath"]))]
        return runs.label_samples(ctx, view, rows, settings, SOURCE, label_batch)

    def resolve_output(self, ctx) -> types.Property:
        return summaries.summary_outputs(self.config.label)

    def __call__(
        self,
        sample_collection,
        label_field: str = "auto_label",
        caption_task: str = DEFAULT_CAPTION_TASK,
        checkpoint: str = DEFAULT_FLORENCE2,
        segmenter: str = DEFAULT_SEGMENTER,
        batch_size: int | None = None,
        write_mode: str = "overwrite",
        mask_dir: str | None = None,
        device: str = "auto",
        num_shards: int = 1,
        ray_address: str | None = None,
        delegate: bool = False,
    ):
        """Auto-label ``sample_collection`` from Python; captions go to ``<label_field>_caption``.

        Example::

            op = foo.get_operator("@gsam2/grounded-sam2/auto_label")
            op(dataset, label_field="auto", caption_task="detailed_caption")
        """
        params = {
            "label_field": label_field,
            "caption_task": caption_task,
            "checkpoint": checkpoint,
            "segmenter": segmenter,
            "batch_size": batch_size,
            "write_mode": write_mode,
            "mask_storage": "files" if mask_dir else "database",
            "mask_dir": mask_dir,
            "device": device,
            "num_shards": num_shards,
            "ray_address": ray_address,
        }
        return runs.run_in_python(self, sample_collection, params, delegate)


#: The operator class's name before the core's result class ``AutoLabel`` became ``CaptionedDetections``.
AutoLabel = AutoLabelOperator
