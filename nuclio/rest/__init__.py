"""Labelling a whole CVAT task or job over CVAT's REST API (through cvat-sdk's client): ``gsam2 cvat``."""
