"""Framework-free core of Grounded SAM 2: detectors, SAM 2, pipelines and exports.

Nothing in here imports FiftyOne, CVAT or nuclio; the adapters do.
"""

from .detections import class_names, empty_detections
from .errors import GroundedSam2Error, InputError, ModelLoadError, PromptError
from .exports import detections_to_record, draw_detections, mask_to_rle, rle_to_mask
from .images import as_rgb_array, decode_image, load_image
from .models import SAM2_CHECKPOINTS, load_detector, load_segmenter
from .prompts import parse_prompt, prompt_text
from .run import Run, ground_and_segment
from .spec import DEFAULT_BOX_THRESHOLD, DEFAULT_DETECTOR, DEFAULT_SEGMENTER, DEFAULT_TEXT_THRESHOLD, RunSpec

__all__ = [
    "DEFAULT_BOX_THRESHOLD",
    "DEFAULT_DETECTOR",
    "DEFAULT_SEGMENTER",
    "DEFAULT_TEXT_THRESHOLD",
    "SAM2_CHECKPOINTS",
    "GroundedSam2Error",
    "InputError",
    "ModelLoadError",
    "PromptError",
    "Run",
    "RunSpec",
    "as_rgb_array",
    "class_names",
    "decode_image",
    "detections_to_record",
    "draw_detections",
    "empty_detections",
    "ground_and_segment",
    "load_detector",
    "load_image",
    "load_segmenter",
    "mask_to_rle",
    "parse_prompt",
    "prompt_text",
    "rle_to_mask",
]
