"""cvat-sdk interaction function (agent-based, CVAT Online/Enterprise): SAM 2 clicks -> mask.

    cvat-cli function create-native "SAM 2" --function-module gsam2.nuclio.sdk.interaction
    cvat-cli function run-agent FUNCTION_ID --function-module gsam2.nuclio.sdk.interaction

Needs cvat-sdk >= 2.71 (InteractionFunction), with the ``masks`` extra.
``preprocess_image`` runs SAM 2's image encoder once; the agent reuses its
result for every click on that image. An image of more than ``max_image_pixels``
pixels (``GSAM2_MAX_IMAGE_PIXELS``, else 40 MP) is refused before it is decoded.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import cvat_sdk.auto_annotation as cvataa
from cvat_sdk.masks import encode_mask

from ...core.images import to_rgb_array
from ...core.run import Run
from ...core.segmenter import ImageEmbedding
from ..handlers.protocol import check_image_pixels
from ..handlers.protocol import max_image_pixels as serving_max_image_pixels
from .params import spec_from_params


class Sam2Interaction:
    spec = cvataa.InteractionFunctionSpec(min_pos_points=1, min_neg_points=0)

    def __init__(self, max_image_pixels: int | str = 0, **settings):
        """``settings``: a run's (``segmenter``, ``device``, ...; see :class:`~gsam2.core.spec.RunSpec`),
        typed or as strings; SAM 2's image model is the one used."""
        self.run = Run(spec_from_params(settings))
        self.segmenter = self.run.image_segmenter
        max_image_pixels = int(max_image_pixels or 0)
        self.max_image_pixels = max_image_pixels if max_image_pixels > 0 else serving_max_image_pixels()

    def preprocess_image(self, context, image: PIL.Image.Image) -> ImageEmbedding:
        check_image_pixels(*image.size, name="the image", limit=self.max_image_pixels)  # not decoded yet
        [embedding] = self.segmenter.embed([to_rgb_array(image)])
        return embedding

    def detect(self, context, pp_image: ImageEmbedding, prompts) -> list[cvataa.InteractionResultShape]:
        points = list(prompts.pos_points) + list(prompts.neg_points)
        labels = [1] * len(prompts.pos_points) + [0] * len(prompts.neg_points)
        box = None
        if prompts.bounding_box is not None:
            (x1, y1), (x2, y2) = prompts.bounding_box
            box = np.array([x1, y1, x2, y2], np.float32)
        mask, _ = self.segmenter.segment_points(pp_image, np.array(points, np.float32), np.array(labels), box)
        if not mask.any():
            return []
        return [cvataa.InteractionResultShape(type="mask", points=encode_mask(mask))]


create = Sam2Interaction
