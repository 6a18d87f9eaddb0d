"""Operator ``florence2``: one of Florence-2's six tasks finds the regions, SAM 2 segments them."""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ..core import DEFAULT_BOX_THRESHOLD, DEFAULT_SEGMENTER, DEFAULT_TEXT_THRESHOLD
from ..core.detectors.sliced import DEFAULT_SLICE_OVERLAP
from ..core.backends import DETECTOR_BACKENDS
from . import forms, runs
from .ground_and_segment import GroundAndSegment

DEFAULT_FLORENCE2 = DETECTOR_BACKENDS["florence2"].default_checkpoint


class Florence2GroundAndSegment(GroundAndSegment):
    """The ``ground_and_segment`` operator with Florence-2 fixed as the detector and its task as a choice."""

    default_field = "florence2"
    source = "florence2"
    show_thresholds = False  # Florence-2 generates text, with no scores to threshold

    @property
    def config(self) -> foo.OperatorConfig:
        return forms.operator_config(
            "florence2",
            "Florence-2 + SAM 2: find and segment",  # short: the operator browser cuts long names
            "Florence-2 runs the chosen task (object detection, dense region captions, region proposals, "
            "phrase grounding, referring expressions, open-vocabulary detection); SAM 2 segments every region",
        )

    def add_detector_inputs(self, inputs: types.Object, ctx) -> None:
        forms.add_checkpoint_input(
            inputs,
            ctx.params,
            "checkpoint",
            default=DEFAULT_FLORENCE2,
            label="Florence-2 checkpoint",
            description="A Hugging Face hub id or a local folder",
        )
        forms.add_florence2_task_input(inputs)
        forms.add_slicing_inputs(inputs, ctx.params)

    def run_params(self, params: dict[str, Any]) -> dict[str, Any]:
        checkpoint = params.get("checkpoint") or DEFAULT_FLORENCE2
        return dict(params, detector=f"florence2:{checkpoint}", task=params.get("task") or "object_detection")

    def __call__(
        self,
        sample_collection,
        task: str = "object_detection",
        prompt: str | None = None,
        label_field: str = "florence2",
        checkpoint: str = DEFAULT_FLORENCE2,
        segmenter: str = DEFAULT_SEGMENTER,
        batch_size: int | None = None,
        write_mode: str = "overwrite",
        mask_dir: str | None = None,
        slice_size: int = 0,
        slice_overlap: int = DEFAULT_SLICE_OVERLAP,
        device: str = "auto",
        num_shards: int = 1,
        ray_address: str | None = None,
        delegate: bool = False,
    ):
        """Run a Florence-2 task + SAM 2 on ``sample_collection``, from Python.

        Example::

            op = foo.get_operator("@gsam2/grounded-sam2/florence2")
            op(dataset, task="dense_region_caption")
            op(dataset, task="phrase_grounding", prompt="a dog chasing a red ball")
        """
        params = {
            "task": task,
            "prompt": prompt,
            "label_field": label_field,
            "checkpoint": checkpoint,
            "segmenter": segmenter,
            "box_threshold": DEFAULT_BOX_THRESHOLD,
            "text_threshold": DEFAULT_TEXT_THRESHOLD,
            "batch_size": batch_size,
            "write_mode": write_mode,
            "mask_storage": "files" if mask_dir else "database",
            "mask_dir": mask_dir,
            "slice_size": slice_size,
            "slice_overlap": slice_overlap,
            "device": device,
            "num_shards": num_shards,
            "ray_address": ray_address,
        }
        return runs.run_in_python(self, sample_collection, params, delegate)
