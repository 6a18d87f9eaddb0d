"""CVAT serverless (Nuclio) functions and cvat-sdk functions on the shared core.

Not built yet: see the CVAT issue. Nothing in this package is usable today.
"""
