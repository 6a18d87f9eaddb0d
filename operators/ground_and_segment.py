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
    ground_and_segment,
    load_detector,
    load_segmenter,
    parse_prompt,
)
from ..core.pipeline import DEFAULT_BATCH_SIZE
from . import common

SOURCE = "ground_and_segment"


class GroundAndSegment(foo.Operator):
    @property
    def config(self) -> foo.OperatorConfig:
        return common.operator_config(
            "ground_and_segment",
            "Grounded SAM 2: detect and segment from a text prompt",
            "Grounding DINO finds what the prompt names, SAM 2 segments it",
        )

    def resolve_delegation(self, ctx) -> bool | None:
        # Splitting into shards only queues work: do that part at once.
        return False if common.wants_fan_out(ctx.params) else None

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        inputs.view_target(ctx)
        prompt = inputs.str(
            "prompt",
            required=True,
            label="Prompt",
            description='What to find: class names each followed by a period, e.g. "car. person. dog."',
        )
        if ctx.params.get("prompt") is not None:
            try:
                parse_prompt(ctx.params["prompt"])
            except InputError as error:
                prompt.invalid = True
                prompt.error_message = str(error)
        common.add_model_inputs(inputs)
        common.add_threshold_inputs(inputs)
        common.add_output_inputs(inputs, ctx, default_field="gsam2")
        return types.Property(inputs, view=types.View(label="Grounded SAM 2"))

    def execute(self, ctx) -> dict[str, Any]:
        params = ctx.params
        phrases = parse_prompt(params.get("prompt") or "")  # an empty prompt fails before any write
        settings = common.run_settings(params)
        if common.wants_fan_out(params):
            return common.finish(ctx, {"queued": common.queue_shards(ctx, self.uri)})

        view = common.shard_of(ctx.target_view(), params.get("shard_index"), int(params.get("num_shards") or 1))
        detector = load_detector(params.get("detector") or DEFAULT_DETECTOR, device=params.get("device", "auto"))
        segmenter = load_segmenter(params.get("segmenter") or DEFAULT_SEGMENTER, device=params.get("device", "auto"))
        detector.validate_phrases(phrases)
        common.ensure_fields(ctx.dataset, settings["label_field"])
        box_threshold = float(params.get("box_threshold", DEFAULT_BOX_THRESHOLD))
        text_threshold = float(params.get("text_threshold", DEFAULT_TEXT_THRESHOLD))

        def label_batch(loaded):
            results = ground_and_segment(
                [image for _, image, _ in loaded],
                phrases,
                detector=detector,
                segmenter=segmenter,
                box_threshold=box_threshold,
                text_threshold=text_threshold,
                batch_size=settings["batch_size"],
            )
            return [(detections, None) for detections in results]

        rows = [(sample_id, filepath, None) for sample_id, filepath in zip(*view.values(["id", "filepath"]))]
        return common.label_samples(ctx, view, rows, settings, SOURCE, label_batch)

    def resolve_output(self, ctx) -> types.Property:
        return common.summary_outputs("Grounded SAM 2")

    def __call__(
        self,
        sample_collection,
        prompt: str,
        label_field: str = "gsam2",
        detector: str = DEFAULT_DETECTOR,
        segmenter: str = DEFAULT_SEGMENTER,
        box_threshold: float = DEFAULT_BOX_THRESHOLD,
        text_threshold: float = DEFAULT_TEXT_THRESHOLD,
        batch_size: int = DEFAULT_BATCH_SIZE,
        write_mode: str = "overwrite",
        mask_dir: str | None = None,
        device: str = "auto",
        num_shards: int = 1,
        delegate: bool = False,
    ):
        """Detect and segment what ``prompt`` names in ``sample_collection``, from Python.

        Example::

            op = foo.get_operator("@gsam2/grounded-sam2/ground_and_segment")
            op(dataset, "car. person.", label_field="gsam2")
        """
        params = {
            "prompt": prompt,
            "label_field": label_field,
            "detector": detector,
            "segmenter": segmenter,
            "box_threshold": box_threshold,
            "text_threshold": text_threshold,
            "batch_size": batch_size,
            "write_mode": write_mode,
            "mask_storage": "files" if mask_dir else "database",
            "mask_dir": mask_dir,
            "device": device,
            "num_shards": num_shards,
        }
        return common.execute_in_python(self, sample_collection, params, delegate)
