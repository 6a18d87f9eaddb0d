"""What every ``gsam2`` command prints and returns: exit statuses, printable names, usage errors, signals."""

from __future__ import annotations

import sys

from ..core import GroundedSam2Error
from ..core.spec import SettingError
from .options import cli_option

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


def printable(text: str, stream=None) -> str:
    """``text`` as ``stream`` (default: standard output) can print it, whatever the file names in it.

    A name that is not valid in the file system's encoding reaches us with
    surrogates in place of its bytes (``os.fsdecode``); they become ``\\xff``
    escapes, and so does any character the stream's encoding lacks, so a strict
    stream (``PYTHONIOENCODING=utf-8:strict``, an ASCII terminal) never raises
    ``UnicodeEncodeError`` on a name.
    """
    stream = stream or sys.stdout
    filesystem = sys.getfilesystemencoding()
    try:
        text = text.encode(filesystem, "surrogateescape").decode(filesystem, "backslashreplace")
    except UnicodeError:  # a surrogate no file name decodes to: escaped below
        pass
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding)


def report(text: str, stream=None) -> None:
    """Print ``text`` with :func:`printable` (stdout by default)."""
    stream = stream or sys.stdout
    print(printable(text, stream), file=stream)


def usage_error(error: GroundedSam2Error) -> int:
    """Print a usage error (a run setting named by its option) and return the usage exit status."""
    message = error.spelled(cli_option) if isinstance(error, SettingError) else str(error)
    report(f"error: {message}", sys.stderr)
    return EXIT_USAGE


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, Slurm): stop as Ctrl-C does, with exit status 143."""


def terminate(signum, frame) -> None:
    raise Terminated()


def stopped_status(stop: KeyboardInterrupt) -> int:
    """128 + the signal: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return 143 if isinstance(stop, Terminated) else 130
