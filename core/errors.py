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


class OutputError(GroundedSam2Error):
    """One output file could not be written (a folder in its place, no permission): that item's failure."""


class DiskFullError(OSError):
    """No space (ENOSPC) or quota (EDQUOT) left for an output: every later write would fail too.

    Deliberately not a :class:`GroundedSam2Error`: the pipelined runner takes those
    for one item's failure and goes on, while this one must stop the run.
    Made as ``DiskFullError(errno, reason, path)``; ``str()`` is one line naming the file.
    """

    def __str__(self) -> str:
        return f"{self.filename}: cannot write it ({self.strerror})"
