"""Errors the core raises for things a user can get wrong.

Every message names the input (a file, a prompt, a checkpoint) and says what is
wrong with it in one line, so that the CLI, the FiftyOne operators and the CVAT
functions can show it as is.
"""

from __future__ import annotations


class GroundedSam2Error(Exception):
    """Base class of every error this project raises on purpose."""


class InputError(GroundedSam2Error, ValueError):
    """An input (image, video, request field) is missing, unreadable or invalid."""


class PromptError(InputError):
    """A text prompt is empty, malformed or too long for the detector."""


class ModelLoadError(GroundedSam2Error):
    """A model checkpoint could not be found or loaded."""
