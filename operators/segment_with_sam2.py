"""Operator ``segment_with_sam2``: masks for boxes that already exist."""

from __future__ import annotations


import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types
import numpy as np
import supervision as sv

from ..core import DEFAULT_SEGMENTER, InputError
from ..core.run import Run
from . import dataset_writes, forms, runs, sharding, summaries
from .params import run_settings, spec_from_params
from .labels import box_from_relative

SOURCE = "segment_with_sam2"
SOURCE_LINK = "source_id"


def detection_fields(dataset) -> list[str]:
    schema = dataset.get_field_schema(embedded_doc_type=fo.Detections)
    return sorted(schema)


class SegmentWithSam2(foo.Operator):
    @property
    def config(self) -> foo.OperatorConfig:
        return forms.operator_config(
            "segment_with_sam2",
            "Grounded SAM 2: segment existing boxes with SAM 2",
            "Add SAM 2 masks to the boxes of a Detections field",
        )

    def resolve_delegation(self, ctx) -> bool | None:
        return False if sharding.wants_fan_out(ctx.params) else None

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        inputs.view_target(ctx)
        forms.require_images_in_form(inputs, ctx)
        fields = detection_fields(ctx.dataset) if ctx.dataset is not None else []
        if fields:
            inputs.enum(
                "source_field",
                fields,
                required=True,
                label="Boxes from",
                default=fields[0],
                description="The Detections field whose boxes SAM 2 segments",
                view=types.DropdownView(),
            )
        else:
            problem = (
                f"dataset {ctx.dataset.name!r} has no Detections field: add boxes first (or use ground_and_segment)"
            )
            forms.add_form_error(inputs, "source_error", problem)
        forms.add_model_inputs(inputs, detector=False, ctx=ctx)
        forms.add_output_inputs(inputs, ctx, default_field="sam2")
        forms.add_run_notice(inputs)
        return types.Property(inputs, view=types.View(label=self.config.label))

    def execute(self, ctx):
        return runs.execute(ctx, lambda: self.prepare(ctx), self.resolve_output(ctx))

    def prepare(self, ctx) -> runs.Prepared:
        params = ctx.params
        settings = run_settings(params)
        spec = spec_from_params(params, ctx)
        forms.require_images(ctx)
        source_field = params.get("source_field") or ""
        if source_field not in detection_fields(ctx.dataset):
            raise InputError(f"source field {source_field!r}: not a Detections field of dataset {ctx.dataset.name!r}")
        if source_field == settings["label_field"]:
            raise InputError(f"label field {source_field!r}: write the masks to another field than the source")
        dataset_writes.check_outputs(ctx.dataset, settings)
        if sharding.wants_fan_out(params):
            return summaries.queued_summary(sharding.queue_shards(ctx, self.uri))

        view = sharding.shard_of(ctx.target_view(), params)
        segmenter = Run(spec).image_segmenter  # SAM 2 alone: the boxes come from the source field
        dataset_writes.ensure_fields(ctx.dataset, settings["label_field"])

        def label_batch(loaded):
            with_boxes = [(sample_id, image) for sample_id, image, boxes in loaded if boxes]
            embeddings = dict(zip((row[0] for row in with_boxes), segmenter.embed([row[1] for row in with_boxes])))
            return [
                (
                    self._segment(segmenter, embeddings.get(sample_id), image, boxes),
                    [{SOURCE_LINK: b.id} for b in boxes],
                )
                for sample_id, image, boxes in loaded
            ]

        rows = [
            (sample_id, filepath, source.detections if source is not None else [])
            for sample_id, filepath, source in zip(*view.values(["id", "filepath", source_field]))
        ]
        return runs.label_samples(ctx, view, rows, settings, SOURCE, label_batch)

    @staticmethod
    def _segment(segmenter, embedding, image: np.ndarray, boxes: list) -> sv.Detections:
        height, width = image.shape[:2]
        for index, box in enumerate(boxes):
            values = box.bounding_box
            if values is None or len(values) != 4 or not np.isfinite(np.asarray(values, dtype=float)).all():
                raise InputError(f"detection {index} ({box.label or 'no label'}) has an invalid box {values!r}")
        xyxy = np.array([box_from_relative(box.bounding_box, width, height) for box in boxes], np.float32).reshape(
            -1, 4
        )
        if embedding is not None:
            masks, mask_scores = segmenter.segment_boxes(embedding, xyxy, compact=True)  # box crops come from crops
        else:
            masks, mask_scores = np.zeros((0, height, width), bool), np.zeros((0,), np.float32)
        # float64 so that a source confidence of 0.7 comes back as 0.7, not 0.699999988
        confidence = np.array([np.nan if box.confidence is None else box.confidence for box in boxes], np.float64)
        return sv.Detections(
            xyxy=xyxy,
            mask=masks,
            confidence=confidence,
            class_id=np.zeros(len(boxes), dtype=int),
            data={
                "class_name": np.array([box.label or "" for box in boxes], dtype=str),
                "mask_score": mask_scores.astype(np.float32),
            },
        )

    def resolve_output(self, ctx) -> types.Property:
        return summaries.summary_outputs(self.config.label)

    def __call__(
        self,
        sample_collection,
        source_field: str,
        label_field: str = "sam2",
        segmenter: str = DEFAULT_SEGMENTER,
        batch_size: int | None = None,
        write_mode: str = "overwrite",
        mask_dir: str | None = None,
        device: str = "auto",
        num_shards: int = 1,
        delegate: bool = False,
    ):
        """Add SAM 2 masks to the boxes in ``source_field``, writing ``label_field``, from Python.

        Example::

            op = foo.get_operator("@gsam2/grounded-sam2/segment_with_sam2")
            op(dataset, "ground_truth", label_field="sam2")
        """
        params = {
            "source_field": source_field,
            "label_field": label_field,
            "segmenter": segmenter,
            "batch_size": batch_size,
            "write_mode": write_mode,
            "mask_storage": "files" if mask_dir else "database",
            "mask_dir": mask_dir,
            "device": device,
            "num_shards": num_shards,
        }
        return runs.run_in_python(self, sample_collection, params, delegate)
