"""Grounded SAM 2 for FiftyOne and CVAT.

This folder is one Python package. Installed with pip it imports as ``gsam2``
(``gsam2.core``, ``gsam2.cli``, ...); FiftyOne imports the same folder as the
plugin ``@gsam2/grounded-sam2`` and calls :func:`register`. FiftyOne is only
imported inside :func:`register`, so the core, the CLI and the CVAT functions
never need it.
"""

__version__ = "0.1.0"


def register(plugin) -> None:
    """FiftyOne plugin entry point: register every operator listed in ``fiftyone.yml``."""
    from .operators import register_operators

    register_operators(plugin)
