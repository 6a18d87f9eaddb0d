"""cvat-sdk detection function: Grounded SAM 2 with the prompt as a parameter.

    cvat-cli --server-host https://app.cvat.ai task auto-annotate TASK_ID \\
        --function-module gsam2.nuclio.sdk.detection \\
        -p prompt=str:"car. person. traffic light." --allow-unmatched-labels

Needs ``cvat-sdk[masks]`` (>= 2.24 for ``conv_mask_to_poly``; tested with 2.80).
The function's labels are the prompt's phrases; cvat-sdk matches them to the
task's labels by name. Without a prompt the vocabulary is COCO's 80 classes,
so with ``--allow-unmatched-labels`` a task labelled with COCO names gets its
own labels detected.

Every setting of a run (:class:`~gsam2.core.spec.RunSpec`) is a parameter, typed
or as a string: any detector (``-p detector=str:owlv2``, ``-p
detector=str:mm-grounding-dino``, ``-p detector=str:florence2 -p
task=str:object_detection``, ``-p detector=str:dinox`` with ``DDS_API_TOKEN`` in
the environment), ``-p slice_size=int:640 -p slice_overlap=int:128`` for sliced
inference, ``-p segmenter=str:large``, ``-p box_threshold=float:0.3 -p
text_threshold=str:0.2``.

As an agent serves other users' requests, a frame of more than
``max_image_pixels`` pixels (``GSAM2_MAX_IMAGE_PIXELS``, else 40 MP, as the
Nuclio functions) is refused from its header, before it is decoded; ``-p
max_image_pixels=int:N`` raises it.
"""

from __future__ import annotations

import PIL.Image
import cvat_sdk.auto_annotation as cvataa
import cvat_sdk.models as models
from cvat_sdk.masks import encode_mask

from ...core.images import to_rgb_array
from ...core.prompts import label_phrase
from ...core.run import Run
from ..handlers.detector import phrase_groups, vocabulary_detections, with_box_threshold
from ..generate import COCO_LABELS
from ..handlers.protocol import check_image_pixels, mask_bounds, polygon_points
from ..handlers.protocol import max_image_pixels as serving_max_image_pixels
from .params import spec_from_params


class GroundedSam2Detection:
    """``create(**params)``: every setting of a :class:`~gsam2.core.spec.RunSpec` (``prompt``, ``detector``,
    ``task``, ``slice_size``, ``slice_overlap``, ``segmenter``, ``device``, ``box_threshold``,
    ``text_threshold``, ...), typed or as ``cvat-cli -p name=str:value`` strings, and the function's
    own ``max_image_pixels``."""

    def __init__(self, max_image_pixels: int | str = 0, **settings):
        max_image_pixels = int(max_image_pixels or 0)
        self.max_image_pixels = max_image_pixels if max_image_pixels > 0 else serving_max_image_pixels()
        self.run = Run(spec_from_params(settings))
        names = self.run.spec.prompt or COCO_LABELS
        # The label phrases (core.prompts.label_phrase), which the detector's phrases are mapped back through.
        self.phrases = list(dict.fromkeys(label_phrase(name) for name in names))
        self.label_ids = {phrase: index for index, phrase in enumerate(self.phrases)}
        self.run.load_for_images()
        self.detector, self.segmenter = self.run.detector, self.run.segmenter
        self.groups = phrase_groups(self.detector, self.phrases)
        self._spec = cvataa.DetectionFunctionSpec(
            labels=[cvataa.label_spec(phrase, index, type="mask") for index, phrase in enumerate(self.phrases)]
        )

    @property
    def spec(self) -> cvataa.DetectionFunctionSpec:
        return self._spec

    def detect(
        self, context: cvataa.DetectionFunctionContext, image: PIL.Image.Image
    ) -> list[models.LabeledShapeRequest]:
        threshold = context.conf_threshold if context.conf_threshold is not None else self.run.spec.box_threshold
        check_image_pixels(*image.size, name=context.frame_name, limit=self.max_image_pixels)  # not decoded yet
        rgb = to_rgb_array(image)
        shapes = []
        run = with_box_threshold(self.run, self.detector, self.segmenter, threshold)
        for phrase, confidence, xyxy, mask, offset in vocabulary_detections(rgb, self.groups, run):  # mask: a crop at offset
            # A prompt-free detector names what it finds in its own spelling ("Traffic light").
            label_id = self.label_ids.get(label_phrase(phrase))
            if confidence < threshold or label_id is None:
                continue  # below the threshold, or a prompt-free detector's name outside the labels
            bounds = mask_bounds(mask, offset)
            if bounds is None:
                shapes.append(cvataa.rectangle(label_id, [float(v) for v in xyxy]))
            elif context.conv_mask_to_poly:
                points = polygon_points(mask, offset)
                if len(points) >= 6:
                    shapes.append(cvataa.polygon(label_id, points))
            else:
                shapes.append(cvataa.mask(label_id, encode_crop(mask, offset, bounds)))
        return shapes


def encode_crop(crop, offset: tuple[int, int], bounds: tuple[int, int, int, int]) -> list[float]:
    """cvat-sdk's ``encode_mask`` of a mask given as a crop at ``offset``, over its inclusive image ``bounds``.

    ``encode_mask`` encodes ``bitmap[y1:y2, x1:x2]`` row-major and appends
    ``[x1, y1, x2 - 1, y2 - 1]``; with the crop as the bitmap those four are in
    crop coordinates, so they are replaced by the image ones.
    """
    x0, y0 = offset
    x1, y1, x2, y2 = bounds
    encoded = encode_mask(crop, [x1 - x0, y1 - y0, x2 - x0 + 1, y2 - y0 + 1])
    return encoded[:-4] + [x1, y1, x2, y2]


create = GroundedSam2Detection
