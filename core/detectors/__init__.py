"""Open-vocabulary detectors: a text prompt in, boxes with phrase labels out.

Every detector implements :class:`~.base.Detector`, so the pipelines, the CLI,
the FiftyOne operators and the CVAT functions take any of them by name.
"""

from .base import Detector
from .grounding_dino import GroundingDinoDetector

__all__ = ["Detector", "GroundingDinoDetector"]
