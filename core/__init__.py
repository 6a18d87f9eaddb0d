"""Framework-free core of Grounded SAM 2: detectors, SAM 2, pipelines and exports.

Nothing in here imports FiftyOne, CVAT or nuclio; the adapters do.
"""

import importlib
from typing import Any

# Exports load on first use (PEP 562), so that ``import gsam2.core.spec`` (a driver planning a
# run, a CVAT function reading its environment) imports neither torch nor transformers.
_EXPORTED_FROM = {
    ".detections": ("class_names", "empty_detections"),
    ".errors": ("GroundedSam2Error", "InputError", "ModelLoadError", "PromptError"),
    ".exports": ("detections_to_record", "draw_detections", "mask_to_rle", "rle_to_mask"),
    ".images": ("as_rgb_array", "decode_image", "load_image"),
    ".backends": ("SAM2_CHECKPOINTS", "load_detector", "load_segmenter"),
    ".prompts": ("parse_prompt", "prompt_text"),
    ".run": ("Run", "ground_and_segment"),
    ".spec": ("DEFAULT_BOX_THRESHOLD", "DEFAULT_DETECTOR", "DEFAULT_SEGMENTER", "DEFAULT_TEXT_THRESHOLD", "RunSpec"),
}
_MODULE_OF = {name: module for module, names in _EXPORTED_FROM.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_MODULE_OF))


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
