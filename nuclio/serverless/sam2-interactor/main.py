"""Nuclio entry point: CVAT calls init_context once per worker, then handler per request."""

from gsam2.nuclio.handlers.interactor import handler, init_context  # noqa: F401
