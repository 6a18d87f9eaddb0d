"""Old path of :mod:`.fiftyone_model`, kept so that ``from gsam2.operators.model import GroundedSam2Model`` still works."""

from .fiftyone_model import GroundedSam2Model  # noqa: F401
