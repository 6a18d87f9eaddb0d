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
    load_image,
    load_segmenter,
    parse_prompt,
)
from ..core.pipeline import DEFAULT_BATCH_SIZE, batched
from . import common
from .labels import to_fiftyone_detections

SOURCE = "ground_and_segment"


class GroundAndSegment(foo.Operator):
    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="ground_and_segment",
            label="Grounded SAM 2: detect and segment from a text prompt",
            description="Grounding DINO finds what the prompt names, SAM 2 segments it",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
        )

    def resolve_delegation(self, ctx) -> bool | None:
        # Splitting into shards only queues work: do that part at once.
        return False if common.wants_fan_out(ctx.params) else None

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        inputs.view_target(ctx)
        prompt = inputs.str(
            "prompt", required=True, label="Prompt",
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

        ids, filepaths = view.values(["id", "filepath"]) if len(view) else ([], [])
        total, done, objects, failed = len(ids), 0, 0, []
        common.report_progress(ctx, 0, total)
        for batch in batched(list(zip(ids, filepaths)), settings["batch_size"]):
            loaded, errors = [], {}
            for sample_id, filepath in batch:
                try:
                    loaded.append((sample_id, load_image(filepath)))
                except InputError as error:
                    errors[sample_id] = str(error)
                    failed.append({"id": sample_id, "filepath": filepath, "error": str(error)})
            results = ground_and_segment(
                [image for _, image in loaded],
                phrases,
                detector=detector,
                segmenter=segmenter,
                box_threshold=float(params.get("box_threshold", DEFAULT_BOX_THRESHOLD)),
                text_threshold=float(params.get("text_threshold", DEFAULT_TEXT_THRESHOLD)),
                batch_size=settings["batch_size"],
            )
            common.clear_mask_files(settings["mask_dir"], settings["label_field"], [i for i, _ in loaded])
            labels = {}
            for (sample_id, image), detections in zip(loaded, results):
                paths = common.mask_paths_for(settings["mask_dir"], settings["label_field"], sample_id, len(detections))
                labels[sample_id] = to_fiftyone_detections(detections, image.shape[:2], SOURCE, mask_paths=paths)
                errors[sample_id] = None
                objects += len(detections)
            common.write_batch(view, settings["label_field"], labels, errors, settings["write_mode"], SOURCE)
            done += len(batch)
            common.report_progress(ctx, done, total)
        summary = {"processed": total - len(failed), "objects": objects, "failed_count": len(failed), "failed": failed[:100]}
        return common.finish(ctx, summary)

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
            "prompt": prompt, "label_field": label_field, "detector": detector, "segmenter": segmenter,
            "box_threshold": box_threshold, "text_threshold": text_threshold, "batch_size": batch_size,
            "write_mode": write_mode, "mask_storage": "files" if mask_dir else "database", "mask_dir": mask_dir,
            "device": device, "num_shards": num_shards,
        }
        return common.execute_in_python(self, sample_collection, params, delegate)
